//! Reading a new password for the operator CLI: from a terminal prompt without echo, or
//! from standard input (`--password-stdin`), never from the command line.

use std::io::BufRead as _;

/// Why no password was read.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// Reading failed.
    #[error("cannot read the password: {0}")]
    Io(#[from] std::io::Error),
    /// The two entries differ.
    #[error("the passwords do not match")]
    Mismatch,
    /// Standard input was empty.
    #[error("no password on standard input")]
    Empty,
}

/// Prompts twice on the terminal without echo; both entries must match.
pub fn prompt_new_password(login: &str) -> Result<String, PromptError> {
    let a = rpassword::prompt_password(format!("New password for {login}: "))?;
    let b = rpassword::prompt_password("Repeat it: ")?;
    if a != b {
        return Err(PromptError::Mismatch);
    }
    Ok(a)
}

/// Reads the first line of `input` (without its line ending).
pub fn read_password_line(input: impl std::io::Read) -> Result<String, PromptError> {
    let mut line = String::new();
    std::io::BufReader::new(input).read_line(&mut line)?;
    let pw = line.trim_end_matches(['\r', '\n']).to_owned();
    if pw.is_empty() {
        return Err(PromptError::Empty);
    }
    Ok(pw)
}

/// `--password-stdin` reads standard input; otherwise the terminal is asked.
pub fn new_password(login: &str, from_stdin: bool) -> Result<String, PromptError> {
    if from_stdin {
        read_password_line(std::io::stdin().lock())
    } else {
        prompt_new_password(login)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_first_line_only() {
        assert_eq!(
            read_password_line(&b"pa ss\r\nrest\n"[..]).unwrap(),
            "pa ss"
        );
        assert!(matches!(
            read_password_line(&b"\n"[..]),
            Err(PromptError::Empty)
        ));
    }
}
