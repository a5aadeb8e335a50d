//! The systemd notify protocol for `Type=notify` units (sd_notify(3)): `READY=1` once the
//! server accepts connections, `STOPPING=1` when it begins to shut down. One datagram to the
//! socket named by `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace); nothing when
//! the variable is unset (not started by systemd). A failure to notify is logged, never fatal.

use std::os::unix::net::UnixDatagram;

/// Tells systemd the service is up.
pub(crate) fn ready() {
    notify("READY=1");
}

/// Tells systemd the service is stopping.
pub(crate) fn stopping() {
    notify("STOPPING=1");
}

fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else { return };
    if let Err(e) = send(&target, state) {
        tracing::warn!(error = %e, state, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

fn send(target: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(target);
    match bytes.split_first() {
        #[cfg(target_os = "linux")]
        Some((b'@', name)) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        Some((b'/', _)) => {
            socket.send_to(state.as_bytes(), target)?;
        }
        _ => return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a socket path")),
    }
    Ok(())
}
