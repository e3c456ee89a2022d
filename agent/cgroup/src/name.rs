//! Cage names: they become directory names in every cgroup hierarchy.

use crate::constants::CAGE_NAME_LEN_BYTES_MAX;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("cage cgroup name is empty")]
    Empty,
    #[error(
        "cage cgroup name {name:?} is {len_bytes} bytes long, more than {CAGE_NAME_LEN_BYTES_MAX}"
    )]
    TooLong { name: String, len_bytes: usize },
    #[error(
        "cage cgroup name {name:?} has {found:?} at byte {offset}; only ASCII letters, digits, '-' \
         and '_' are allowed (no '/', no '.', so no path and no clash with interface files such as memory.max)"
    )]
    BadChar {
        name: String,
        found: char,
        offset: usize,
    },
    #[error("cage cgroup name {name:?} must start with an ASCII letter or digit")]
    BadStart { name: String },
}

/// Checks a cage name: 1..=64 bytes of `[A-Za-z0-9_-]`, starting with a letter or digit.
/// `..`, `/` and names like `cgroup.procs` are impossible by construction.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > CAGE_NAME_LEN_BYTES_MAX {
        return Err(NameError::TooLong {
            name: name
                .chars()
                .take(CAGE_NAME_LEN_BYTES_MAX)
                .collect::<String>()
                + "…",
            len_bytes: name.len(),
        });
    }
    if let Some((offset, found)) = name
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(NameError::BadChar {
            name: name.to_string(),
            found,
            offset,
        });
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(NameError::BadStart {
            name: name.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names_pass() {
        for name in [
            "a",
            "run-0001",
            "Job_7",
            &"x".repeat(CAGE_NAME_LEN_BYTES_MAX),
        ] {
            assert_eq!(validate_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn bad_names_say_why() {
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert!(matches!(
            validate_name(&"x".repeat(CAGE_NAME_LEN_BYTES_MAX + 1)),
            Err(NameError::TooLong { len_bytes: 65, .. })
        ));
        assert_eq!(
            validate_name("a/b"),
            Err(NameError::BadChar {
                name: "a/b".into(),
                found: '/',
                offset: 1
            })
        );
        assert!(matches!(
            validate_name(".."),
            Err(NameError::BadChar {
                found: '.',
                offset: 0,
                ..
            })
        ));
        assert!(matches!(
            validate_name("memory.max"),
            Err(NameError::BadChar { offset: 6, .. })
        ));
        assert!(matches!(
            validate_name("é"),
            Err(NameError::BadChar { found: 'é', .. })
        ));
        assert!(matches!(
            validate_name("-x"),
            Err(NameError::BadStart { .. })
        ));
        assert!(matches!(
            validate_name("_x"),
            Err(NameError::BadStart { .. })
        ));
        let message = validate_name("a b").expect_err("space").to_string();
        assert!(
            message.contains("' '") && message.contains("byte 1"),
            "{message}"
        );
    }
}
