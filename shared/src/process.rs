//! Process-level helpers both binaries use.

/// Completes on Ctrl-C, or on SIGTERM on Unix (how systemd stops a service).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Polls `shutdown` once and says whether it has completed: whatever it
/// listens to (the signal handlers of [`shutdown_signal`]) is then in place,
/// so a program polls it before telling systemd it is ready — a SIGTERM
/// before the handler exists would end the process without a clean stop.
pub async fn stop_requested<F: std::future::Future>(shutdown: std::pin::Pin<&mut F>) -> bool {
    let mut shutdown = shutdown;
    std::future::poll_fn(|cx| std::task::Poll::Ready(shutdown.as_mut().poll(cx).is_ready())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_poll_sees_a_stop_already_requested_and_waits_for_one_to_come() {
        let done = std::future::ready(());
        tokio::pin!(done);
        assert!(stop_requested(done.as_mut()).await);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let later = async {
            let _ = rx.await;
        };
        tokio::pin!(later);
        assert!(!stop_requested(later.as_mut()).await);
        tx.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), later)
            .await
            .expect("completes once requested");
    }
}
