//! Burn's process-wide RNG, held by one model build at a time.

/// Burn's backend RNG (parameter initialisation, dropout) is process-wide: two trainings
/// interleaving on it would not be reproducible, so one process trains one model at a time.
/// Building a network for inference draws from the same RNG (its initial weights, then
/// overwritten), so it takes the same lock.
static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Hold Burn's process-wide RNG for the guard's lifetime.
pub fn rng_guard() -> std::sync::MutexGuard<'static, ()> {
    TRAINING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
