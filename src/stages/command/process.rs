//! Running a user's program: an argument vector (no shell) in its own process group, stdout and
//! stderr streamed line by line to the terminal (escaped, with the stage's prefix) and into a log
//! file, a time limit, and no survivors: when it ends, times out, or `galaxy-pipe` is
//! interrupted (SIGINT, SIGTERM), its whole group is ended; when `galaxy-pipe` is killed with
//! SIGKILL, the kernel ends the program (`PR_SET_PDEATHSIG`).

use std::collections::{BTreeSet, VecDeque};
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, PipeReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use crate::progress::Progress;
use crate::untrusted::escape;

/// How many of the program's last output lines an error shows.
pub const TAIL_LINES: usize = 20;

/// What to run, where, with what.
pub struct Program {
    pub argv: Vec<String>,
    pub workdir: PathBuf,
    pub env: Vec<(String, OsString)>,
    pub timeout: Option<Duration>,
    /// The prefix of its lines on the terminal (the stage id).
    pub label: String,
}

/// How the program ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    Signalled(i32),
    TimedOut(Duration),
}

/// The ending and the last [`TAIL_LINES`] lines it printed (stdout and stderr, in the order written).
pub struct Finished {
    pub ending: Ending,
    pub tail: Vec<String>,
}

/// Process groups of the programs running now, ended on SIGINT/SIGTERM.
static RUNNING: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// Set once SIGINT or SIGTERM arrived: the handler is ending the programs and will exit; a
/// program that ends because of it is not a stage failure to report.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Runs `program` to its end, appending its output to `log`.
pub fn run(program: &Program, log: &Path, progress: &Progress) -> Result<Finished, String> {
    end_programs_on_interrupt()?;
    let log = File::create(log).map_err(|e| format!("creating the log {}: {e}", log.display()))?;
    let (output, mut child) = spawn(program)?;
    let group = child.id() as i32;
    RUNNING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(group);
    let sink = Sink {
        log: Mutex::new(log),
        tail: Mutex::new(VecDeque::new()),
        label: program.label.clone(),
    };
    let ending = std::thread::scope(|scope| {
        scope.spawn(|| read_lines(output, &sink, progress));
        let ending = wait(&mut child, program.timeout, group);
        // Whatever it left behind in its group (a background helper) ends with it, which also
        // closes the pipes the readers wait on.
        kill_group(group, libc::SIGKILL);
        ending
    });
    RUNNING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&group);
    if INTERRUPTED.load(Ordering::SeqCst) {
        // The interrupt handler exits the process once every program is ended.
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let tail = sink
        .tail
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into();
    Ok(Finished {
        ending: ending?,
        tail,
    })
}

/// Starts the program with stdout and stderr on one pipe (as `2>&1` would: its lines keep the
/// order it wrote them in); the pipe's reading end and the child.
fn spawn(program: &Program) -> Result<(PipeReader, Child), String> {
    let (output, writer) = std::io::pipe().map_err(|e| format!("creating a pipe: {e}"))?;
    let writer_too = writer
        .try_clone()
        .map_err(|e| format!("creating a pipe: {e}"))?;
    let mut command = Command::new(&program.argv[0]);
    command
        .args(&program.argv[1..])
        .current_dir(&program.workdir)
        .env_clear()
        .envs(program.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer_too)
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = command.spawn().map_err(|e| {
        format!(
            "cannot start `{}` (in {}): {e}",
            escape(&program.argv[0]),
            program.workdir.display()
        )
    })?;
    // Our copies of the writing end go with `command`, so the reader sees the end of the output
    // when the program (and whatever inherited the pipe) is gone.
    drop(command);
    Ok((output, child))
}

/// Waits for the child, ending its group when the time limit passes.
fn wait(child: &mut Child, timeout: Option<Duration>, group: i32) -> Result<Ending, String> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return Ok(match (status.code(), status.signal()) {
                    (Some(code), _) => Ending::Exited(code),
                    (None, Some(signal)) => Ending::Signalled(signal),
                    (None, None) => Ending::Exited(-1),
                });
            }
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for the program: {e}")),
        }
        if let Some(limit) = timeout
            && start.elapsed() >= limit
        {
            end_group(group);
            let _ = child.wait();
            return Ok(Ending::TimedOut(limit));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM to the group, then SIGKILL after a grace period of up to 5 s.
fn end_group(group: i32) {
    kill_group(group, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && group_alive(group) {
        std::thread::sleep(Duration::from_millis(50));
    }
    kill_group(group, libc::SIGKILL);
}

fn kill_group(group: i32, signal: i32) {
    // SAFETY: signalling a process group this process created.
    unsafe { libc::killpg(group, signal) };
}

fn group_alive(group: i32) -> bool {
    // SAFETY: signal 0 only checks that the group exists.
    unsafe { libc::killpg(group, 0) == 0 }
}

/// Installs (once) the handler that ends every running program's group on SIGINT or SIGTERM
/// and then exits as the signal would have.
fn end_programs_on_interrupt() -> Result<(), String> {
    static INSTALL: Once = Once::new();
    let mut failed = None;
    INSTALL.call_once(|| {
        use signal_hook::consts::{SIGINT, SIGTERM};
        match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
            Ok(mut signals) => {
                std::thread::spawn(move || {
                    if let Some(signal) = signals.forever().next() {
                        INTERRUPTED.store(true, Ordering::SeqCst);
                        let groups: Vec<i32> = RUNNING
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .iter()
                            .copied()
                            .collect();
                        groups.iter().for_each(|g| end_group(*g));
                        if !groups.is_empty() {
                            eprintln!("interrupted: ended the running program(s)");
                        }
                        std::process::exit(128 + signal);
                    }
                });
            }
            Err(e) => failed = Some(format!("installing the interrupt handler: {e}")),
        }
    });
    failed.map_or(Ok(()), Err)
}

/// Where the program's lines go.
struct Sink {
    log: Mutex<File>,
    tail: Mutex<VecDeque<String>>,
    label: String,
}

fn read_lines(stream: PipeReader, sink: &Sink, progress: &Progress) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
        let _ = sink
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(&line);
        let text = String::from_utf8_lossy(&line);
        let text = escape(text.trim_end_matches(['\n', '\r'])).into_owned();
        progress.println(&format!("{} │ {text}", sink.label));
        let mut tail = sink.tail.lock().unwrap_or_else(|e| e.into_inner());
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(text);
        line.clear();
    }
}
