//! The pid a response body names. The workspace's example servers say which process answered:
//! `/pid` answers with the number alone, other pages end with `... from pid N` (or `pid N.`).

/// The pid `body` names: the body's one number, or the number right after its last `pid `.
pub fn pid_in_body(body: &str) -> Option<u32> {
    let body = body.trim();
    if let Ok(pid) = body.parse() {
        return Some(pid);
    }
    let (_, rest) = body.rsplit_once("pid ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_pid_from_every_body() {
        assert_eq!(pid_in_body("1234\n"), Some(1234));
        assert_eq!(pid_in_body("hello from pid 77\n"), Some(77));
        assert_eq!(
            pid_in_body("started at 2024-01-01T00:00:00.000Z slept for 1s from pid 9.\n"),
            Some(9)
        );
        assert_eq!(pid_in_body("nope"), None);
        assert_eq!(pid_in_body("pid x"), None);
    }
}
