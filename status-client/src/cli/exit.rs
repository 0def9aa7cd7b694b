//! The process exit status of each outcome, so that scripts can tell failures apart.

use tonic::Code;

/// Exit status for a local error: bad settings, I/O, a failed listener.
pub const LOCAL_ERROR: u8 = 1;

/// Exit status for bad usage or settings (clap uses it for argument errors too).
pub const USAGE_ERROR: u8 = 2;

/// Exit status for a call that failed with `code`: 10 plus the gRPC code number, so every code
/// has its own status and none collides with 1 (local error) or 2 (bad usage).
pub fn exit_status(code: Code) -> u8 {
    10 + u8::try_from(code as i32).unwrap_or(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_code_has_a_distinct_status() {
        assert_eq!(exit_status(Code::NotFound), 15);
        assert_eq!(exit_status(Code::Unauthenticated), 26);
        let statuses: std::collections::HashSet<u8> =
            (0..17).map(|c| exit_status(Code::from(c))).collect();
        assert_eq!(statuses.len(), 17);
    }
}
