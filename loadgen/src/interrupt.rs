//! Ctrl-C (SIGINT) during a run or a sweep against a store that outlives it
//! ([`Backend::OUTLIVES_RUN`](crate::backend::Backend::OUTLIVES_RUN):
//! Redis), from the start of its populate: the run's live population (or
//! what the populate has made of it) is deleted before the process ends,
//! with exit code 130, as the normal end of a run deletes it. Left there
//! for its timeout (30 minutes by default), it doubled the next run's
//! population on the same server and could change that run's verdict. A
//! second Ctrl-C ends the process at once. The embedded engine's runs keep
//! the default: the process ends and its memory goes with it.

use std::sync::{Mutex, Once, PoisonError};

/// Exit code of an interrupted run (128 + SIGINT, as a shell reports it).
pub const EXIT_INTERRUPTED: i32 = 130;

type Cleanup = Box<dyn FnOnce() + Send>;

/// What an interrupt must do before the process ends. The normal end takes
/// it under this lock and runs it holding the lock, so an interrupt that
/// arrives meanwhile waits for it instead of ending the process half-way.
static CLEANUP: Mutex<Option<Cleanup>> = Mutex::new(None);
static INSTALL: Once = Once::new();

/// Sets what an interrupt does from now on (and starts listening for one,
/// the first time).
pub fn on_interrupt(cleanup: impl FnOnce() + Send + 'static) {
    INSTALL.call_once(listen);
    *CLEANUP.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(cleanup));
}

/// For a thread an interrupt's cleanup stopped: waits for that cleanup to
/// end and the process with it (with [`EXIT_INTERRUPTED`]), so that this
/// thread cannot end the process first, with another code, the cleanup
/// half done.
pub fn await_exit() -> ! {
    run_cleanup();
    loop {
        std::thread::park();
    }
}

/// Forgets the cleanup set by [`on_interrupt`] (its work is done): an
/// interrupt from now on ends the process at once.
pub fn clear() {
    CLEANUP.lock().unwrap_or_else(PoisonError::into_inner).take();
}

/// The normal end: runs the cleanup set by [`on_interrupt`] (if an
/// interrupt has not), here, holding off an interrupt until it is done.
pub fn run_cleanup() {
    let mut cleanup = CLEANUP.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(f) = cleanup.take() {
        f();
    }
}

/// Runs [`run_cleanup`] when dropped: held from the moment a cleanup is
/// set until the run ends, so that an error returned or a panic in between
/// still runs it (a sweep whose peak was too low to step, say, left its
/// population on the server).
pub struct CleanupGuard;

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        run_cleanup();
    }
}

/// Starts the thread that hears Ctrl-C, and returns once it listens (an
/// interrupt before that would end the process by its default action).
fn listen() {
    let (ready, listening) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("loadgen-interrupt".into())
        .spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async {
                // Registered here, not at the first poll.
                let Ok(mut interrupts) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                else {
                    return;
                };
                let _ = ready.send(());
                if interrupts.recv().await.is_none() {
                    return;
                }
                eprintln!(
                    "loadgen: interrupted: deleting the run's live population (Ctrl-C again to quit at once)"
                );
                std::thread::spawn(|| {
                    // The cleanup runs on this thread, outside the runtime.
                    run_cleanup();
                    std::process::exit(EXIT_INTERRUPTED);
                });
                let _ = interrupts.recv().await;
                std::process::exit(EXIT_INTERRUPTED);
            });
        });
    // Without the thread, Ctrl-C keeps its default (the process ends).
    if spawned.is_ok() {
        let _ = listening.recv_timeout(std::time::Duration::from_secs(5));
    }
}
