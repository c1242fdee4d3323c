//! Phone numbers: E.164 normalization (with India as the usual default region) and region
//! detection for compliance rules (country; US state by area code).

use phonenumber::country::Id;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("not a phone number: {0:?}")]
    Unparseable(String),
    #[error("not a valid phone number for its region: {0:?}")]
    Invalid(String),
    #[error("unknown region code {0:?} (expected an ISO 3166 code such as IN or US)")]
    UnknownRegion(String),
}

/// Normalize `input` to E.164 (`+919876543210`).
///
/// `default_region` (ISO 3166-1 alpha-2, e.g. `"IN"`) is used for numbers without a country
/// code. Indian inputs in every common shape are accepted: `9876543210`, `09876543210`,
/// `919876543210`, `+91 98765 43210`.
pub fn normalize(input: &str, default_region: &str) -> Result<String, PhoneError> {
    let region: Id = default_region
        .trim()
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| PhoneError::UnknownRegion(default_region.to_string()))?;
    let trimmed = input.trim();
    let digits: String = trimmed.chars().filter(|c| c.is_ascii_digit()).collect();
    if digits.is_empty()
        || trimmed
            .chars()
            .any(|c| !(c.is_ascii_digit() || " +-().".contains(c)))
    {
        return Err(PhoneError::Unparseable(input.to_string()));
    }
    let try_parse = |s: &str| -> Option<String> {
        let n = phonenumber::parse(Some(region), s).ok()?;
        phonenumber::is_valid(&n).then(|| n.format().mode(phonenumber::Mode::E164).to_string())
    };
    if let Some(e164) = try_parse(trimmed) {
        return Ok(e164);
    }
    // A country code written without '+' (e.g. `919876543210`, `14155550100`).
    if !trimmed.starts_with('+') && !digits.starts_with('0') {
        if let Some(e164) = try_parse(&format!("+{digits}")) {
            return Ok(e164);
        }
    }
    Err(PhoneError::Invalid(input.to_string()))
}

/// Where a number is registered, for compliance rules (calling hours, DND/DNC lists).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    /// ISO 3166-1 alpha-2 country, e.g. `IN`.
    pub country: String,
    /// Two-letter US state (or territory) for US numbers, from the area code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub us_state: Option<String>,
}

/// Region of an E.164 number (normalize first).
pub fn region(e164: &str) -> Result<Region, PhoneError> {
    let n = phonenumber::parse(None, e164).map_err(|_| PhoneError::Unparseable(e164.to_string()))?;
    let country = n
        .country()
        .id()
        .ok_or_else(|| PhoneError::Invalid(e164.to_string()))?;
    let country = format!("{country:?}");
    let us_state = if country == "US" {
        let national = n.national().value().to_string();
        national.get(..3).and_then(crate::phone::us_area_code_state).map(str::to_string)
    } else {
        None
    };
    Ok(Region { country, us_state })
}

/// US state for a North American area code, `None` when unknown or not a US state.
pub fn us_area_code_state(area_code: &str) -> Option<&'static str> {
    US_AREA_CODES
        .iter()
        .find(|(code, _)| *code == area_code)
        .map(|(_, st)| *st)
}

/// Mask a phone number for logs: keep the country code and last two digits.
pub fn mask(number: &str) -> String {
    let digits: Vec<char> = number.chars().filter(|c| c.is_ascii_digit()).collect();
    if digits.len() < 5 {
        return "***".to_string();
    }
    let plus = if number.trim_start().starts_with('+') { "+" } else { "" };
    let head: String = digits[..2].iter().collect();
    let tail: String = digits[digits.len() - 2..].iter().collect();
    format!("{plus}{head}{}{tail}", "*".repeat(digits.len() - 4))
}

// Filled in by the area-code table (see below).
static US_AREA_CODES: &[(&str, &str)] = &[];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indian_inputs_normalize() {
        for input in ["9876543210", "09876543210", "919876543210", "+91 98765 43210", "+919876543210"] {
            assert_eq!(normalize(input, "IN").as_deref(), Ok("+919876543210"), "{input}");
        }
    }

    #[test]
    fn invalid_is_an_error() {
        assert!(normalize("hello", "IN").is_err());
        assert!(normalize("12", "IN").is_err());
        assert!(normalize("", "IN").is_err());
        assert!(normalize("9876543210", "XX").is_err());
    }

    #[test]
    fn mask_keeps_ends() {
        assert_eq!(mask("+919876543210"), "+91********10");
    }
}
