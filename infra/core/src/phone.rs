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
///
/// Results are memoized in a small bounded cache: parsing with libphonenumber's metadata costs
/// microseconds, and a tenant's own numbers (and repeat callers) recur in every webhook.
pub fn normalize(input: &str, default_region: &str) -> Result<String, PhoneError> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Memo = Mutex<HashMap<(String, String), Result<String, PhoneError>>>;
    const MEMO_CAPACITY: usize = 4096;
    static MEMO: OnceLock<Memo> = OnceLock::new();
    let memo = MEMO.get_or_init(|| Mutex::new(HashMap::new()));
    let key = (default_region.to_string(), input.to_string());
    if let Some(hit) = memo.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return hit;
    }
    let result = normalize_uncached(input, default_region);
    if let Ok(mut m) = memo.lock() {
        if m.len() >= MEMO_CAPACITY {
            m.clear();
        }
        m.insert(key, result.clone());
    }
    result
}

fn normalize_uncached(input: &str, default_region: &str) -> Result<String, PhoneError> {
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
    // Indian inputs: reduce every common shape (`9876543210`, `09876543210`, `919876543210`)
    // to the 10-digit national number first, so all shapes of one number agree even where
    // libphonenumber's metadata treats them differently.
    if region == Id::IN && !trimmed.starts_with('+') {
        let national = match digits.len() {
            10 => Some(digits.as_str()),
            11 if digits.starts_with('0') => digits.get(1..),
            12 if digits.starts_with("91") => digits.get(2..),
            _ => None,
        };
        if let Some(national) = national {
            return try_parse(&format!("+91{national}"))
                .ok_or_else(|| PhoneError::Invalid(input.to_string()));
        }
    }
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
    let n =
        phonenumber::parse(None, e164).map_err(|_| PhoneError::Unparseable(e164.to_string()))?;
    let country = n
        .country()
        .id()
        .ok_or_else(|| PhoneError::Invalid(e164.to_string()))?;
    let country = format!("{country:?}");
    let us_state = if country == "US" {
        let national = n.national().value().to_string();
        national
            .get(..3)
            .and_then(crate::phone::us_area_code_state)
            .map(str::to_string)
    } else {
        None
    };
    Ok(Region { country, us_state })
}

/// US state for a North American area code, `None` when unknown or not a US state.
pub fn us_area_code_state(area_code: &str) -> Option<&'static str> {
    // The table is sorted by code (a test holds it to that), so a binary search finds it.
    US_AREA_CODES
        .binary_search_by(|(code, _)| (*code).cmp(area_code))
        .ok()
        .and_then(|i| US_AREA_CODES.get(i))
        .map(|(_, st)| *st)
}

/// Mask a phone number for logs: keep the country code and last two digits.
pub fn mask(number: &str) -> String {
    let digits: Vec<char> = number.chars().filter(|c| c.is_ascii_digit()).collect();
    if digits.len() < 5 {
        return "***".to_string();
    }
    let plus = if number.trim_start().starts_with('+') {
        "+"
    } else {
        ""
    };
    let head: String = digits[..2].iter().collect();
    let tail: String = digits[digits.len() - 2..].iter().collect();
    format!("{plus}{head}{}{tail}", "*".repeat(digits.len() - 4))
}

/// US geographic area codes (NANP NPAs) and the state, district or territory each serves,
/// sorted by code.
///
/// Sources: the geocoding data of Google's libphonenumber (release 9.0.43): every +1 NPA whose
/// numbers it assigns to region US as fixed-line-or-mobile, with the state it names; plus
/// relief (overlay) codes assigned by NANPA after that metadata (483 AL, 436 OH, 624 NY,
/// 764 CA, 837 CA, 861 IL, 924 MN); plus the US territories, which libphonenumber treats as
/// countries of their own (340 VI, 670 MP, 671 GU, 684 AS, 787 and 939 PR).
///
/// Left out on purpose: Canadian and Caribbean NPAs (they are not US states), and
/// non-geographic codes (toll-free 8xx, 900, 500-series personal communications, 700, 710),
/// which say nothing about where a caller is.
#[rustfmt::skip]
static US_AREA_CODES: &[(&str, &str)] = &[
    ("201", "NJ"), ("202", "DC"), ("203", "CT"), ("205", "AL"), ("206", "WA"), ("207", "ME"),
    ("208", "ID"), ("209", "CA"), ("210", "TX"), ("212", "NY"), ("213", "CA"), ("214", "TX"),
    ("215", "PA"), ("216", "OH"), ("217", "IL"), ("218", "MN"), ("219", "IN"), ("220", "OH"),
    ("223", "PA"), ("224", "IL"), ("225", "LA"), ("227", "MD"), ("228", "MS"), ("229", "GA"),
    ("231", "MI"), ("234", "OH"), ("235", "MO"), ("239", "FL"), ("240", "MD"), ("248", "MI"),
    ("251", "AL"), ("252", "NC"), ("253", "WA"), ("254", "TX"), ("256", "AL"), ("260", "IN"),
    ("262", "WI"), ("267", "PA"), ("269", "MI"), ("270", "KY"), ("272", "PA"), ("274", "WI"),
    ("276", "VA"), ("279", "CA"), ("281", "TX"), ("283", "OH"), ("301", "MD"), ("302", "DE"),
    ("303", "CO"), ("304", "WV"), ("305", "FL"), ("307", "WY"), ("308", "NE"), ("309", "IL"),
    ("310", "CA"), ("312", "IL"), ("313", "MI"), ("314", "MO"), ("315", "NY"), ("316", "KS"),
    ("317", "IN"), ("318", "LA"), ("319", "IA"), ("320", "MN"), ("321", "FL"), ("323", "CA"),
    ("324", "FL"), ("325", "TX"), ("326", "OH"), ("327", "AR"), ("329", "NY"), ("330", "OH"),
    ("331", "IL"), ("332", "NY"), ("334", "AL"), ("336", "NC"), ("337", "LA"), ("339", "MA"),
    ("340", "VI"), ("341", "CA"), ("346", "TX"), ("347", "NY"), ("350", "CA"), ("351", "MA"),
    ("352", "FL"), ("353", "WI"), ("360", "WA"), ("361", "TX"), ("363", "NY"), ("364", "KY"),
    ("369", "CA"), ("380", "OH"), ("385", "UT"), ("386", "FL"), ("401", "RI"), ("402", "NE"),
    ("404", "GA"), ("405", "OK"), ("406", "MT"), ("407", "FL"), ("408", "CA"), ("409", "TX"),
    ("410", "MD"), ("412", "PA"), ("413", "MA"), ("414", "WI"), ("415", "CA"), ("417", "MO"),
    ("419", "OH"), ("423", "TN"), ("424", "CA"), ("425", "WA"), ("430", "TX"), ("432", "TX"),
    ("434", "VA"), ("435", "UT"), ("436", "OH"), ("440", "OH"), ("442", "CA"), ("443", "MD"),
    ("445", "PA"), ("447", "IL"), ("448", "FL"), ("458", "OR"), ("463", "IN"), ("464", "IL"),
    ("469", "TX"), ("470", "GA"), ("472", "NC"), ("475", "CT"), ("478", "GA"), ("479", "AR"),
    ("480", "AZ"), ("483", "AL"), ("484", "PA"), ("501", "AR"), ("502", "KY"), ("503", "OR"),
    ("504", "LA"), ("505", "NM"), ("507", "MN"), ("508", "MA"), ("509", "WA"), ("510", "CA"),
    ("512", "TX"), ("513", "OH"), ("515", "IA"), ("516", "NY"), ("517", "MI"), ("518", "NY"),
    ("520", "AZ"), ("530", "CA"), ("531", "NE"), ("534", "WI"), ("539", "OK"), ("540", "VA"),
    ("541", "OR"), ("551", "NJ"), ("557", "MO"), ("559", "CA"), ("561", "FL"), ("562", "CA"),
    ("563", "IA"), ("564", "WA"), ("567", "OH"), ("570", "PA"), ("571", "VA"), ("572", "OK"),
    ("573", "MO"), ("574", "IN"), ("575", "NM"), ("580", "OK"), ("582", "PA"), ("585", "NY"),
    ("586", "MI"), ("601", "MS"), ("602", "AZ"), ("603", "NH"), ("605", "SD"), ("606", "KY"),
    ("607", "NY"), ("608", "WI"), ("609", "NJ"), ("610", "PA"), ("612", "MN"), ("614", "OH"),
    ("615", "TN"), ("616", "MI"), ("617", "MA"), ("618", "IL"), ("619", "CA"), ("620", "KS"),
    ("623", "AZ"), ("624", "NY"), ("626", "CA"), ("628", "CA"), ("629", "TN"), ("630", "IL"),
    ("631", "NY"), ("636", "MO"), ("640", "NJ"), ("641", "IA"), ("645", "FL"), ("646", "NY"),
    ("650", "CA"), ("651", "MN"), ("656", "FL"), ("657", "CA"), ("659", "AL"), ("660", "MO"),
    ("661", "CA"), ("662", "MS"), ("667", "MD"), ("669", "CA"), ("670", "MP"), ("671", "GU"),
    ("678", "GA"), ("680", "NY"), ("681", "WV"), ("682", "TX"), ("684", "AS"), ("686", "VA"),
    ("689", "FL"), ("701", "ND"), ("702", "NV"), ("703", "VA"), ("704", "NC"), ("706", "GA"),
    ("707", "CA"), ("708", "IL"), ("712", "IA"), ("713", "TX"), ("714", "CA"), ("715", "WI"),
    ("716", "NY"), ("717", "PA"), ("718", "NY"), ("719", "CO"), ("720", "CO"), ("724", "PA"),
    ("725", "NV"), ("726", "TX"), ("727", "FL"), ("728", "FL"), ("730", "IL"), ("731", "TN"),
    ("732", "NJ"), ("734", "MI"), ("737", "TX"), ("738", "CA"), ("740", "OH"), ("743", "NC"),
    ("747", "CA"), ("748", "CO"), ("754", "FL"), ("757", "VA"), ("760", "CA"), ("762", "GA"),
    ("763", "MN"), ("764", "CA"), ("765", "IN"), ("769", "MS"), ("770", "GA"), ("771", "DC"),
    ("772", "FL"), ("773", "IL"), ("774", "MA"), ("775", "NV"), ("779", "IL"), ("781", "MA"),
    ("785", "KS"), ("786", "FL"), ("787", "PR"), ("801", "UT"), ("802", "VT"), ("803", "SC"),
    ("804", "VA"), ("805", "CA"), ("806", "TX"), ("808", "HI"), ("810", "MI"), ("812", "IN"),
    ("813", "FL"), ("814", "PA"), ("815", "IL"), ("816", "MO"), ("817", "TX"), ("818", "CA"),
    ("820", "CA"), ("821", "SC"), ("826", "VA"), ("828", "NC"), ("830", "TX"), ("831", "CA"),
    ("832", "TX"), ("835", "PA"), ("837", "CA"), ("838", "NY"), ("839", "SC"), ("840", "CA"),
    ("843", "SC"), ("845", "NY"), ("847", "IL"), ("848", "NJ"), ("850", "FL"), ("854", "SC"),
    ("856", "NJ"), ("857", "MA"), ("858", "CA"), ("859", "KY"), ("860", "CT"), ("861", "IL"),
    ("862", "NJ"), ("863", "FL"), ("864", "SC"), ("865", "TN"), ("870", "AR"), ("872", "IL"),
    ("878", "PA"), ("901", "TN"), ("903", "TX"), ("904", "FL"), ("906", "MI"), ("907", "AK"),
    ("908", "NJ"), ("909", "CA"), ("910", "NC"), ("912", "GA"), ("913", "KS"), ("914", "NY"),
    ("915", "TX"), ("916", "CA"), ("917", "NY"), ("918", "OK"), ("919", "NC"), ("920", "WI"),
    ("924", "MN"), ("925", "CA"), ("928", "AZ"), ("929", "NY"), ("930", "IN"), ("931", "TN"),
    ("934", "NY"), ("936", "TX"), ("937", "OH"), ("938", "AL"), ("939", "PR"), ("940", "TX"),
    ("941", "FL"), ("943", "GA"), ("945", "TX"), ("947", "MI"), ("948", "VA"), ("949", "CA"),
    ("951", "CA"), ("952", "MN"), ("954", "FL"), ("956", "TX"), ("959", "CT"), ("970", "CO"),
    ("971", "OR"), ("972", "TX"), ("973", "NJ"), ("975", "MO"), ("978", "MA"), ("979", "TX"),
    ("980", "NC"), ("983", "CO"), ("984", "NC"), ("985", "LA"), ("986", "ID"), ("989", "MI"),
];

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// Outside input never panics, and whatever normalizes is E.164 and stable.
        #[test]
        fn normalize_is_total_and_idempotent(input in "[+0-9 ()\\-.a-z]{0,20}") {
            if let Ok(e164) = normalize(&input, "IN") {
                prop_assert!(e164.starts_with('+'));
                prop_assert!(e164[1..].chars().all(|c| c.is_ascii_digit()));
                prop_assert_eq!(normalize(&e164, "IN"), Ok(e164.clone()));
                prop_assert!(region(&e164).is_ok());
            }
            let _ = mask(&input);
        }

        #[test]
        fn indian_mobiles_in_every_shape_agree(n in 6_000_000_000u64..10_000_000_000u64) {
            let plain = n.to_string();
            let forms = [
                plain.clone(),
                format!("0{plain}"),
                format!("91{plain}"),
                format!("+91 {} {}", &plain[..5], &plain[5..]),
            ];
            let first = normalize(&forms[0], "IN");
            for f in &forms[1..] {
                prop_assert_eq!(&normalize(f, "IN"), &first, "{}", f);
            }
        }
    }

    use super::*;

    #[test]
    fn indian_inputs_normalize() {
        for input in [
            "9876543210",
            "09876543210",
            "919876543210",
            "+91 98765 43210",
            "+919876543210",
        ] {
            assert_eq!(
                normalize(input, "IN").as_deref(),
                Ok("+919876543210"),
                "{input}"
            );
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

    #[test]
    fn area_code_table_is_sorted_unique_and_well_formed() {
        for pair in US_AREA_CODES.windows(2) {
            assert!(
                pair[0].0 < pair[1].0,
                "not sorted or duplicated: {:?} {:?}",
                pair[0],
                pair[1]
            );
        }
        for (code, st) in US_AREA_CODES {
            let b = code.as_bytes();
            assert!(b.len() == 3 && b.iter().all(u8::is_ascii_digit), "{code}");
            // NANP area codes start 2-9 and are never N11 (service codes).
            assert!((b'2'..=b'9').contains(&b[0]), "{code}");
            assert!(!(b[1] == b'1' && b[2] == b'1'), "{code}");
            assert!(
                st.len() == 2 && st.bytes().all(|c| c.is_ascii_uppercase()),
                "{code} {st}"
            );
        }
        // Every state, DC and the five inhabited territories appear.
        for st in [
            "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "FL", "GA", "HI", "ID", "IL", "IN",
            "IA", "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV",
            "NH", "NJ", "NM", "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN",
            "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY", "DC", "PR", "GU", "VI", "AS", "MP",
        ] {
            assert!(
                US_AREA_CODES.iter().any(|(_, s)| *s == st),
                "no area code for {st}"
            );
        }
    }

    #[test]
    fn area_code_lookup() {
        assert_eq!(us_area_code_state("212"), Some("NY"));
        assert_eq!(us_area_code_state("415"), Some("CA"));
        assert_eq!(us_area_code_state("202"), Some("DC"));
        assert_eq!(us_area_code_state("787"), Some("PR"));
        assert_eq!(us_area_code_state("671"), Some("GU"));
        assert_eq!(us_area_code_state("340"), Some("VI"));
        assert_eq!(us_area_code_state("684"), Some("AS"));
        assert_eq!(us_area_code_state("670"), Some("MP"));
        // First and last rows, so an off-by-one in the search would show.
        assert_eq!(us_area_code_state("201"), Some("NJ"));
        assert_eq!(us_area_code_state("989"), Some("MI"));
        // Canada, the Caribbean, toll-free, service codes and junk.
        for code in [
            "416", "604", "514", "867", "876", "242", "809", "441", "800", "888", "911", "", "21",
            "2125", "abc",
        ] {
            assert_eq!(us_area_code_state(code), None, "{code:?}");
        }
    }

    #[test]
    fn regions_of_us_numbers() {
        let r = |n: &str| region(n).unwrap_or_else(|e| panic!("{n}: {e}"));
        assert_eq!(
            r("+12125550100"),
            Region {
                country: "US".into(),
                us_state: Some("NY".into())
            }
        );
        assert_eq!(
            r("+14155550100"),
            Region {
                country: "US".into(),
                us_state: Some("CA".into())
            }
        );
        assert_eq!(
            r("+13125550100"),
            Region {
                country: "US".into(),
                us_state: Some("IL".into())
            }
        );
        assert_eq!(r("+12025550100").us_state.as_deref(), Some("DC"));
    }

    #[test]
    fn canadian_and_caribbean_numbers_have_no_us_state() {
        let r = |n: &str| region(n).unwrap_or_else(|e| panic!("{n}: {e}"));
        assert_eq!(
            r("+14165550100"),
            Region {
                country: "CA".into(),
                us_state: None
            }
        );
        assert_eq!(
            r("+16045550100"),
            Region {
                country: "CA".into(),
                us_state: None
            }
        );
        assert_eq!(
            r("+18762345678"),
            Region {
                country: "JM".into(),
                us_state: None
            }
        );
    }

    /// libphonenumber (and so `phonenumber`) gives Puerto Rico and the other territories
    /// country codes of their own, so `region` reports `country: "PR"` and no `us_state`; the
    /// territory is still in the table for callers that look the area code up directly.
    #[test]
    fn puerto_rico_is_its_own_country() {
        let pr = region("+17875550100").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            pr,
            Region {
                country: "PR".into(),
                us_state: None
            }
        );
        let gu = region("+16712345678").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(gu.country, "GU");
    }

    /// No row of the table may claim an area code that libphonenumber places outside the US
    /// (a Canadian or Caribbean NPA): a state row must resolve to US, a territory row to that
    /// territory. Codes newer than the bundled metadata resolve to no region and are skipped.
    #[test]
    fn table_agrees_with_libphonenumber_regions() {
        const TERRITORIES: [&str; 5] = ["PR", "GU", "VI", "AS", "MP"];
        let mut checked = 0;
        for (code, st) in US_AREA_CODES {
            let Ok(reg) = region(&format!("+1{code}2345678")) else {
                continue;
            };
            checked += 1;
            if TERRITORIES.contains(st) {
                assert_eq!(reg.country, *st, "{code}");
            } else {
                assert_eq!(reg.country, "US", "{code} -> {st}");
                assert_eq!(reg.us_state.as_deref(), Some(*st), "{code}");
            }
        }
        assert!(checked > 300, "only {checked} area codes resolved");
    }
}
