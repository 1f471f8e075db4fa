//! Exit codes and the one line on stderr that explains a failure (the
//! meaning of each code is in the documentation of `main.rs`).

use std::process::ExitCode;

use kvstore_client::ClientError;

/// The exit code of a failed command (`main.rs` documents each code).
pub(crate) fn exit_code(e: &ClientError, write: bool) -> u8 {
    use tonic::Code;
    match e {
        ClientError::Unreachable { .. } => 3,
        ClientError::BadEndpoint(..) | ClientError::BadTls(_) => 2,
        ClientError::Status(_) if write && e.outcome_unknown() => 4,
        ClientError::Status(s) => match s.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => 3,
            _ => 2,
        },
    }
}

/// Reports a failed read (or a request that changes nothing) and gives its
/// exit code.
pub(crate) fn fail(e: ClientError) -> ExitCode {
    eprintln!("kvctl: {e}");
    ExitCode::from(exit_code(&e, false))
}

/// Reports a failed write and gives its exit code; when the write may have
/// been applied anyway, says so, because repeating it blindly may apply it
/// twice.
pub(crate) fn fail_write(e: ClientError) -> ExitCode {
    eprintln!("kvctl: {e}");
    if exit_code(&e, true) == 4 {
        eprintln!("kvctl: the write may have been applied; check before repeating it");
    }
    ExitCode::from(exit_code(&e, true))
}

/// Reports a failed membership change and gives its exit code (as a
/// write's). A refusal is the server's message alone; a change whose
/// outcome is unknown says how to find out, because repeating one that
/// was made is refused (a member already, not a member).
pub(crate) fn fail_change(e: ClientError) -> ExitCode {
    eprintln!("kvctl: {e}");
    let code = exit_code(&e, true);
    if code == 4 {
        eprintln!(
            "kvctl: the change may have been made; check with `kvctl member list` before repeating it"
        );
    }
    ExitCode::from(code)
}
