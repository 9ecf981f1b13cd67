//! Configuration errors as miette diagnostics: file:line:column, a caret-underlined snippet,
//! and a "did you mean" where a name is a near miss.

use std::ops::Range;

use miette::{Diagnostic, NamedSource, SourceSpan};

use super::texts::Sources;

#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum ConfigError {
    #[error(transparent)]
    #[diagnostic(code(config::io))]
    Io(crate::io_error::IoError),

    #[error("{message}")]
    #[diagnostic(code(config::invalid))]
    At {
        message: String,
        #[source_code]
        src: NamedSource<String>,
        #[label("{label}")]
        span: SourceSpan,
        label: String,
        #[help]
        help: Option<String>,
    },

    /// Several problems found in one pass; each is shown.
    #[error("{count} problems in the pipeline")]
    #[diagnostic(code(config::many))]
    Many {
        count: usize,
        #[related]
        errors: Vec<ConfigError>,
    },
}

impl ConfigError {
    pub fn at(
        sources: &Sources,
        source: usize,
        span: Range<usize>,
        message: String,
        help: Option<String>,
    ) -> Self {
        let src = sources.get(source);
        let label = short_label(&message);
        ConfigError::At {
            message,
            src: NamedSource::new(src.name.clone(), src.text.clone()).with_language("toml"),
            span: (span.start, span.end.saturating_sub(span.start)).into(),
            label,
            help,
        }
    }

    /// An unknown key / kind / stage id, with the closest known name as a suggestion.
    pub fn unknown_name(
        sources: &Sources,
        source: usize,
        span: Range<usize>,
        what: &str,
        name: &str,
        known: &[String],
    ) -> Self {
        let help = match did_you_mean(name, known) {
            Some(best) => Some(format!("did you mean `{best}`?")),
            None if known.is_empty() => None,
            None => Some(format!("known {what}s: {}", known.join(", "))),
        };
        Self::at(
            sources,
            source,
            span,
            format!("unknown {what} `{name}`"),
            help,
        )
    }

    /// Replace the headline message (and the label under the caret).
    pub fn with_message(mut self, new: String) -> Self {
        if let ConfigError::At { message, label, .. } = &mut self {
            *label = short_label(&new);
            *message = new;
        }
        self
    }

    pub fn many(mut errors: Vec<ConfigError>) -> Option<Self> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            count => Some(ConfigError::Many { count, errors }),
        }
    }
}

fn short_label(message: &str) -> String {
    // The label under the caret is the last clause: the specific complaint.
    message.rsplit(": ").next().unwrap_or(message).to_string()
}

/// The closest known name within a small edit distance, if any.
pub fn did_you_mean<'a>(name: &str, known: &'a [String]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(name, k), k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k.as_str())
}
