//! K1: the service is for users aged 13 and over.

use chrono::{Datelike, NaiveDate};

use super::Invalid;

pub const MINIMUM_AGE: u32 = 13;

/// How the user confirmed their age. The date of birth itself is not kept (C1 does not list it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgeConfirmation {
    DateOfBirth,
    SelfDeclared,
}

impl AgeConfirmation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DateOfBirth => "date_of_birth",
            Self::SelfDeclared => "age_confirmed",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum AgeCheck {
    Confirmed(AgeConfirmation),
    /// Under 13: refused, and nothing personal is stored.
    Underage,
}

/// Full years between `dob` and `today`.
pub fn age_on(dob: NaiveDate, today: NaiveDate) -> u32 {
    let mut years = today.year() - dob.year();
    if (today.month(), today.day()) < (dob.month(), dob.day()) {
        years -= 1;
    }
    years.max(0) as u32
}

/// Checks the onboarding input: a date of birth (`YYYY-MM-DD`) or an explicit confirmation.
pub fn check(
    date_of_birth: Option<&str>,
    age_confirmed: Option<bool>,
    today: NaiveDate,
) -> Result<AgeCheck, Invalid> {
    if let Some(raw) = date_of_birth {
        let dob = NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| {
            Invalid::new(
                "invalid_date_of_birth",
                "date_of_birth must be a date as YYYY-MM-DD",
            )
        })?;
        if dob > today || dob.year() < 1900 {
            return Err(Invalid::new(
                "invalid_date_of_birth",
                "date_of_birth is not a plausible date of birth",
            ));
        }
        return Ok(if age_on(dob, today) >= MINIMUM_AGE {
            AgeCheck::Confirmed(AgeConfirmation::DateOfBirth)
        } else {
            AgeCheck::Underage
        });
    }
    match age_confirmed {
        Some(true) => Ok(AgeCheck::Confirmed(AgeConfirmation::SelfDeclared)),
        Some(false) => Ok(AgeCheck::Underage),
        None => Err(Invalid::new(
            "age_confirmation_required",
            "send date_of_birth (YYYY-MM-DD) or age_confirmed: true",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn k1_thirteenth_birthday_is_the_boundary() {
        let today = d("2026-11-22");
        assert_eq!(
            check(Some("2013-11-22"), None, today).unwrap(),
            AgeCheck::Confirmed(AgeConfirmation::DateOfBirth)
        );
        assert_eq!(
            check(Some("2013-11-23"), None, today).unwrap(),
            AgeCheck::Underage
        );
        assert_eq!(check(None, Some(false), today).unwrap(), AgeCheck::Underage);
    }

    #[test]
    fn k1_bad_dates_are_invalid_not_underage() {
        let today = d("2026-11-22");
        assert!(check(Some("2030-01-01"), None, today).is_err());
        assert!(check(Some("22/11/2000"), None, today).is_err());
        assert!(check(Some("2001-02-30"), None, today).is_err());
        assert!(check(None, None, today).is_err());
    }
}
