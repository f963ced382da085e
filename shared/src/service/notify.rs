//! systemd's `Type=notify` protocol: `READY=1` once the program runs,
//! `WATCHDOG=1` at half the unit's `WatchdogSec`, `STOPPING=1` when it
//! stops. Everything here does nothing unless systemd started the process
//! (`NOTIFY_SOCKET`, `WATCHDOG_USEC` set), and nothing on Windows.

use std::time::Duration;

/// Tells systemd the program is up, with a one-line status for
/// `systemctl status`.
pub fn ready(status: &str) {
    #[cfg(unix)]
    send(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
    #[cfg(not(unix))]
    let _ = status;
}

/// Tells systemd the program is stopping.
pub fn stopping() {
    #[cfg(unix)]
    send(&[sd_notify::NotifyState::Stopping]);
}

#[cfg(unix)]
fn send(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// How often to ping, given the watchdog timeout systemd announced: half
/// of it, as sd_watchdog_enabled(3) advises.
pub fn ping_interval(watchdog_usec: u64) -> Option<Duration> {
    (watchdog_usec > 0).then(|| Duration::from_micros(watchdog_usec / 2))
}

/// Pings systemd's watchdog from the current Tokio runtime until the
/// returned guard is dropped; `None` when no watchdog is asked for. The
/// pings stop if the runtime stops making progress, and systemd then
/// restarts the service.
pub fn start_watchdog() -> Option<WatchdogGuard> {
    #[cfg(unix)]
    {
        let mut usec = 0;
        if !sd_notify::watchdog_enabled(false, &mut usec) {
            return None;
        }
        let every = ping_interval(usec)?;
        tracing::debug!(every_ms = every.as_millis() as u64, "systemd watchdog on");
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                send(&[sd_notify::NotifyState::Watchdog]);
            }
        });
        Some(WatchdogGuard(task))
    }
    #[cfg(not(unix))]
    None
}

/// Stops the watchdog pings when dropped.
#[derive(Debug)]
pub struct WatchdogGuard(tokio::task::JoinHandle<()>);

impl Drop for WatchdogGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_at_half_the_watchdog_timeout() {
        assert_eq!(ping_interval(30_000_000), Some(Duration::from_secs(15)));
        assert_eq!(ping_interval(0), None);
    }

    /// A fake systemd: a datagram socket as NOTIFY_SOCKET, and a child
    /// process (this test binary) started as systemd starts a service, with
    /// NOTIFY_SOCKET, WATCHDOG_USEC and its own pid as WATCHDOG_PID.
    #[cfg(unix)]
    #[test]
    fn ready_and_watchdog_reach_the_notify_socket() {
        use std::os::unix::net::UnixDatagram;
        let dir = std::env::temp_dir().join(format!("labhours-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        // `exec` keeps the shell's pid, so $$ is the child's pid.
        let mut child = std::process::Command::new("sh")
            .args(["-c", r#"WATCHDOG_PID=$$ exec "$0" "$@""#])
            .arg(std::env::current_exe().unwrap())
            .args([
                "service::notify::tests::child_notifies",
                "--exact",
                "--ignored",
            ])
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "200000")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut messages = Vec::new();
        let mut buf = [0u8; 256];
        while messages.len() < 3 {
            match socket.recv(&mut buf) {
                Ok(n) => messages.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) => {
                    let _ = child.kill();
                    panic!("no message within 20 s ({e}); got {messages:?}");
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            messages,
            ["READY=1\nSTATUS=running\n", "WATCHDOG=1\n", "WATCHDOG=1\n"]
        );
    }

    /// Runs until killed: ready, then watchdog pings.
    #[cfg(unix)]
    #[test]
    #[ignore = "child process of ready_and_watchdog_reach_the_notify_socket"]
    fn child_notifies() {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            ready("running");
            let _guard = start_watchdog().expect("a watchdog is asked for");
            std::future::pending::<()>().await;
        });
    }
}
