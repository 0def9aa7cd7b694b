//! Collecting every violation of one request, so the caller hears about all of them at once.

use super::{Error, FieldViolation};

/// The violations found so far in one request.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// Records that `field` is invalid.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// Keeps the value of `result`, or records its error against `field`.
    pub fn check<T>(&mut self, field: impl Into<String>, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(description) => {
                self.add(field, description);
                None
            }
        }
    }

    /// `Ok(value)` when nothing was recorded, else [`Error::Invalid`] with every violation.
    pub fn into_result<T>(self, value: impl FnOnce() -> T) -> Result<T, Error> {
        if self.0.is_empty() {
            Ok(value())
        } else {
            Err(Error::Invalid(self.0))
        }
    }
}

/// Checks that `value` has between `min` and `max` characters.
pub(super) fn char_count(value: &str, min: usize, max: usize) -> Result<(), String> {
    let count = value.chars().count();
    if count < min {
        Err(if min == 1 {
            "must not be empty".to_owned()
        } else {
            format!("must have at least {min} characters")
        })
    } else if count > max {
        Err(format!("must have at most {max} characters, has {count}"))
    } else {
        Ok(())
    }
}
