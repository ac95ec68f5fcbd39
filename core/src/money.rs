//! Exact money.
//!
//! Every amount is an integer number of micro-dollars (1 USD = 1,000,000 µ$). Sums, differences and
//! multiplications by counts are exact; the only rounding happens where a rate is divided (per GPU,
//! per second) and it is round-half-to-even, in one place (`div_round`). Prices are never held in
//! `f64`: a month of per-second charges summed in floating point drifts by cents, and budgets are
//! compared against those sums.
//!
//! Nothing here wraps, truncates or panics. Every amount read from outside (spec, catalog, cloud
//! price APIs, scenarios) is at most [`Money::MAX_INPUT`] ($1,000,000,000) in size, refused with an
//! error naming it otherwise. The `try_*` methods return a [`MoneyOverflow`] naming the operands
//! when a result would leave the ±$9.2 trillion an `i64` of micro-dollars can hold; batch
//! computations (fleetsim's bill) use them and fail with that error. The operators (`+`, `-`, sums,
//! [`Money::times`], [`Price::cost_for`]) saturate at [`Money::MAX`] / [`Money::MIN`] instead: a
//! daemon must not stop managing a fleet over an absurd price, and a saturated spend compares above
//! every budget, so a cap still holds (it errs toward spending nothing).

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Neg, Sub, SubAssign};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const MICROS_PER_USD: i64 = 1_000_000;

/// An amount of US dollars, exact to the micro-dollar.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(i64);

impl Money {
    pub const ZERO: Money = Money(0);
    /// The largest amount fleet can count (about $9.2 trillion); operators saturate here.
    pub const MAX: Money = Money(i64::MAX);
    /// The most negative amount (operators saturate here).
    pub const MIN: Money = Money(i64::MIN);
    /// The largest amount, in size, that fleet reads from any input: $1,000,000,000 (a price per
    /// hour, a budget per month). Ten thousand such amounts still sum without overflow.
    pub const MAX_INPUT: Money = Money(1_000_000_000 * MICROS_PER_USD);

    pub const fn from_micros(micros: i64) -> Money {
        Money(micros)
    }

    /// Whole dollars (for constants and tests).
    pub const fn from_dollars(dollars: i64) -> Money {
        Money(dollars * MICROS_PER_USD)
    }

    pub const fn micros(self) -> i64 {
        self.0
    }

    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    pub fn checked_mul(self, n: i64) -> Option<Money> {
        self.0.checked_mul(n).map(Money)
    }

    /// `self + other`, or an error naming both when the sum cannot be counted.
    pub fn try_add(self, other: Money) -> Result<Money, MoneyOverflow> {
        self.checked_add(other).ok_or_else(|| MoneyOverflow::new(format!("{self} + {other}")))
    }

    /// `self - other`, or an error naming both when the difference cannot be counted.
    pub fn try_sub(self, other: Money) -> Result<Money, MoneyOverflow> {
        self.0.checked_sub(other.0).map(Money).ok_or_else(|| MoneyOverflow::new(format!("{self} - {other}")))
    }

    /// `self × n`, or an error naming both when the product cannot be counted.
    pub fn try_times(self, n: u32) -> Result<Money, MoneyOverflow> {
        self.checked_mul(i64::from(n)).ok_or_else(|| MoneyOverflow::new(format!("{self} × {n}")))
    }

    /// Multiplies by a count, saturating at [`Money::MAX`] / [`Money::MIN`] (see the module docs;
    /// [`Money::try_times`] says when).
    pub fn times(self, n: u32) -> Money {
        Money(self.0.saturating_mul(i64::from(n)))
    }

    /// Divides by a count, rounding half to even. Dividing by zero gives zero (a rate shared by
    /// nothing is charged to nothing); callers check counts before they get here.
    pub fn divided_by(self, n: u32) -> Money {
        if n == 0 {
            return Money::ZERO;
        }
        // |num / n| <= |num| for n >= 1, so the quotient always fits back into an i64.
        Money(saturate(div_round(i128::from(self.0), i128::from(n))))
    }

    /// `micros` as money, saturating at [`Money::MAX`] / [`Money::MIN`] (for sums kept in `i128`).
    pub fn from_micros_saturating(micros: i128) -> Money {
        Money(saturate(micros))
    }

    /// Parses a decimal string such as `"98.32"`, `"1.8214000000000001"` or `"-0.5"`.
    ///
    /// Digits beyond the sixth decimal are rounded half to even: catalogs carry float noise such as
    /// Cudo's `1.8214000000000001`, which is 1.8214 to the micro-dollar. Exponents, thousands
    /// separators and currency signs are refused.
    pub fn parse_decimal(s: &str) -> Result<Money, MoneyParseError> {
        let err = |reason: &'static str| MoneyParseError { input: s.to_string(), reason };
        let t = s.trim();
        let t = t.strip_prefix('$').unwrap_or(t);
        let (negative, digits) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        if digits.is_empty() {
            return Err(err("empty"));
        }
        let (int_part, frac_part) = match digits.split_once('.') {
            Some((i, f)) => (i, f),
            None => (digits, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err("no digits"));
        }
        if !int_part.bytes().all(|b| b.is_ascii_digit()) || !frac_part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("only digits and one '.' are allowed"));
        }
        // Refuse early what cannot be an amount (the exact bound is checked below).
        if int_part.trim_start_matches('0').len() > 12 {
            return Err(err("more than $1,000,000,000, the most fleet reads"));
        }
        let int: i128 = if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| err("bad integer part"))? };
        // Keep seven decimals (six plus one to round on) and note whether anything non-zero follows.
        let mut frac: i128 = 0;
        for i in 0..7 {
            let d = frac_part.as_bytes().get(i).map(|b| i128::from(b - b'0')).unwrap_or(0);
            frac = frac * 10 + d;
        }
        let sticky = frac_part.len() > 7 && frac_part.as_bytes()[7..].iter().any(|b| *b != b'0');
        let scaled = int * 10_000_000 + frac; // in tenths of a micro-dollar
        let mut micros = scaled / 10;
        let last = scaled % 10;
        if last > 5 || (last == 5 && (sticky || micros % 2 == 1)) {
            micros += 1;
        }
        if micros > i128::from(Money::MAX_INPUT.0) {
            return Err(err("more than $1,000,000,000, the most fleet reads"));
        }
        let micros = if negative { -micros } else { micros };
        Ok(Money(micros as i64))
    }
}

/// `x` clamped into an `i64`.
fn saturate(x: i128) -> i64 {
    i64::try_from(x).unwrap_or(if x < 0 { i64::MIN } else { i64::MAX })
}

/// A sum, difference or product of money too large to count exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "money overflow: {expression} is beyond the ±$9,223,372,036,854.78 fleet can count; an input \
     (a price, a budget, a count or a duration) is far larger than any real one — check it"
)]
pub struct MoneyOverflow {
    pub expression: String,
}

impl MoneyOverflow {
    fn new(expression: String) -> MoneyOverflow {
        MoneyOverflow { expression }
    }
}

/// `num / den` rounded half to even; `den > 0`.
pub(crate) fn div_round(num: i128, den: i128) -> i128 {
    debug_assert!(den > 0);
    let q = num.div_euclid(den);
    let r = num.rem_euclid(den);
    let twice = 2 * r;
    if twice > den || (twice == den && q % 2 != 0) { q + 1 } else { q }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{input}' is not an amount of dollars ({reason}); write it as a plain decimal such as 98.32")]
pub struct MoneyParseError {
    pub input: String,
    pub reason: &'static str,
}

impl FromStr for Money {
    type Err = MoneyParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Money::parse_decimal(s)
    }
}

impl fmt::Display for Money {
    /// `$98.32`, `$3.76223`, `-$0.50`: at least two decimals, trailing zeros beyond them dropped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = format!("{}${}", if self.0 < 0 { "-" } else { "" }, self.plain());
        f.pad(&s)
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Money({self})")
    }
}

impl Money {
    /// The unsigned decimal text without a currency sign: `98.32`, `3.76223`.
    fn plain(&self) -> String {
        let abs = self.0.unsigned_abs();
        let int = abs / MICROS_PER_USD as u64;
        let frac = abs % MICROS_PER_USD as u64;
        let mut frac_s = format!("{frac:06}");
        while frac_s.len() > 2 && frac_s.ends_with('0') {
            frac_s.pop();
        }
        format!("{int}.{frac_s}")
    }

    /// This amount rounded to whole cents, half away from zero (`$3.765` → `$3.77`).
    pub fn rounded_to_cents(self) -> Money {
        const CENT: i128 = 10_000;
        let m = i128::from(self.0);
        let half = CENT / 2;
        let r = if m >= 0 { (m + half) / CENT } else { -((-m + half) / CENT) };
        Money::from_micros_saturating(r * CENT)
    }

    /// How fleet's tables and summaries show money to people: always to the cent (`$98.32`,
    /// `$0.00`, `-$1.50`), rounded half away from zero. One precision everywhere a person reads
    /// money (fleetctl, fleetsim's tables, events, the demo). JSON stays exact, and so do the
    /// reasons that compare two amounts (a price against a budget's room), where cents could
    /// show two unequal amounts as one.
    pub fn cents(self) -> Cents {
        Cents(self.rounded_to_cents())
    }

    /// Decimal text as used in CSV and JSON: `98.32`, `-0.5` becomes `-0.50`.
    pub fn to_decimal_string(&self) -> String {
        format!("{}{}", if self.0 < 0 { "-" } else { "" }, self.plain())
    }
}

/// [`Money::cents`]: an amount shown to the cent.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cents(Money);

impl fmt::Display for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0.micros();
        let abs = m.unsigned_abs();
        let s = format!(
            "{}${}.{:02}",
            if m < 0 { "-" } else { "" },
            abs / MICROS_PER_USD as u64,
            (abs % MICROS_PER_USD as u64) / 10_000
        );
        f.pad(&s)
    }
}

impl fmt::Debug for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cents({self})")
    }
}

/// JSON and TOML carry money as a decimal *string* ("98.32"), so no reader parses it into a float.
impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_decimal_string())
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Money::parse_decimal(&s).map_err(serde::de::Error::custom)
    }
}

// The operators saturate (module docs): never a wrap, never a panic.
impl Add for Money {
    type Output = Money;
    fn add(self, o: Money) -> Money {
        Money(self.0.saturating_add(o.0))
    }
}
impl AddAssign for Money {
    fn add_assign(&mut self, o: Money) {
        *self = *self + o;
    }
}
impl Sub for Money {
    type Output = Money;
    fn sub(self, o: Money) -> Money {
        Money(self.0.saturating_sub(o.0))
    }
}
impl SubAssign for Money {
    fn sub_assign(&mut self, o: Money) {
        *self = *self - o;
    }
}
impl Neg for Money {
    type Output = Money;
    fn neg(self) -> Money {
        Money(self.0.saturating_neg())
    }
}
impl Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, |a, b| a + b)
    }
}
impl<'a> Sum<&'a Money> for Money {
    fn sum<I: Iterator<Item = &'a Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, |a, b| a + *b)
    }
}

/// A price: dollars per hour for a whole instance (or, after [`Price::per_gpu`], per GPU).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Price(Money);

impl Price {
    pub const ZERO: Price = Price(Money::ZERO);

    pub const fn per_hour(amount: Money) -> Price {
        Price(amount)
    }

    /// The amount charged for one hour.
    pub const fn hourly(self) -> Money {
        self.0
    }

    /// The price of one of `count` GPUs (rounded half to even to the micro-dollar).
    pub fn per_gpu(self, count: u32) -> Price {
        Price(self.0.divided_by(count))
    }

    /// What running for `d` costs, rounded half to even to the micro-dollar. Billing in fleet is
    /// per second or coarser, so `d` is taken in whole milliseconds. Saturates (module docs);
    /// [`Price::try_cost_for`] says when.
    pub fn cost_for(self, d: Duration) -> Money {
        Money(saturate(self.cost_micros(d)))
    }

    /// What running for `d` costs, or an error naming the price and the duration when it cannot
    /// be counted.
    pub fn try_cost_for(self, d: Duration) -> Result<Money, MoneyOverflow> {
        i64::try_from(self.cost_micros(d))
            .map(Money)
            .map_err(|_| MoneyOverflow::new(format!("{self} for {} s", d.as_secs())))
    }

    fn cost_micros(self, d: Duration) -> i128 {
        // u64::MAX seconds in ms is below 2^75 and a price below 2^63: the product fits in i128.
        let millis = i128::try_from(d.as_millis()).unwrap_or(i128::MAX / (1 << 64));
        let millis = millis.min(i128::from(u64::MAX) * 1000);
        div_round(i128::from(self.0.micros()) * millis, 3_600_000)
    }

    pub fn parse_decimal(s: &str) -> Result<Price, MoneyParseError> {
        Money::parse_decimal(s).map(Price)
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format!("{}/h", self.0))
    }
}

impl fmt::Debug for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Price({self})")
    }
}

impl Add for Price {
    type Output = Price;
    fn add(self, o: Price) -> Price {
        Price(self.0 + o.0)
    }
}
impl Sum for Price {
    fn sum<I: Iterator<Item = Price>>(iter: I) -> Price {
        Price(iter.map(|p| p.0).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(s: &str) -> Money {
        Money::parse_decimal(s).unwrap()
    }

    #[test]
    fn parses_catalog_numbers_exactly() {
        assert_eq!(m("98.32").micros(), 98_320_000);
        assert_eq!(m("30.097800").micros(), 30_097_800);
        assert_eq!(m("0.00001").micros(), 10);
        assert_eq!(m(".5").micros(), 500_000);
        assert_eq!(m("7.").micros(), 7_000_000);
        assert_eq!(m("$2.49").micros(), 2_490_000);
        assert_eq!(m("-0.5").micros(), -500_000);
        // Cudo's float noise is rounded away at the micro-dollar.
        assert_eq!(m("1.8214000000000001").micros(), 1_821_400);
    }

    #[test]
    fn rounds_half_to_even_beyond_six_decimals() {
        assert_eq!(m("0.0000005").micros(), 0);
        assert_eq!(m("0.0000015").micros(), 2);
        assert_eq!(m("0.00000050001").micros(), 1);
        assert_eq!(m("0.0000025").micros(), 2);
        assert_eq!(m("0.0000026").micros(), 3);
    }

    #[test]
    fn refuses_what_is_not_a_plain_decimal() {
        for bad in ["", "-", ".", "abc", "1e3", "1,000.00", "1.2.3", "NaN", "inf", " 1 2"] {
            let e = Money::parse_decimal(bad).unwrap_err();
            assert!(e.to_string().contains("is not an amount of dollars"), "{bad}: {e}");
        }
    }

    #[test]
    fn sums_are_exact_where_f64_is_not() {
        // 0.1 + 0.2 in f64 is 0.30000000000000004; a million ten-cent charges drift in f64.
        let ten_cents = m("0.10");
        let total: Money = std::iter::repeat_n(ten_cents, 1_000_000).sum();
        assert_eq!(total, Money::from_dollars(100_000));
        let f: f64 = std::iter::repeat_n(0.1f64, 1_000_000).sum();
        assert_ne!(f, 100_000.0, "f64 would have been fine here, so this test proves nothing");
    }

    #[test]
    fn displays_with_at_least_two_decimals() {
        assert_eq!(m("98.32").to_string(), "$98.32");
        assert_eq!(m("3.76223").to_string(), "$3.76223");
        assert_eq!(m("3.76223").cents().to_string(), "$3.76");
        assert_eq!(m("3.765").cents().to_string(), "$3.77");
        assert_eq!(m("3.764999").cents().to_string(), "$3.76");
        assert_eq!(m("-1.505").cents().to_string(), "-$1.51");
        assert_eq!(m("-0.004").cents().to_string(), "$0.00");
        assert_eq!(m("98").cents().to_string(), "$98.00");
        assert_eq!(format!("{:>8}", m("1.5").cents()), "   $1.50");
        assert_eq!(Money::MAX.cents().to_string(), "$9223372036854.77");

        assert_eq!(m("7").to_string(), "$7.00");
        assert_eq!(m("-0.5").to_string(), "-$0.50");
        assert_eq!(Price::parse_decimal("87.83247").unwrap().to_string(), "$87.83247/h");
        assert_eq!(format!("{:>10}", m("1.5")), "     $1.50");
    }

    #[test]
    fn per_gpu_and_cost_for_round_half_even() {
        let p = Price::parse_decimal("98.32").unwrap();
        assert_eq!(p.per_gpu(8).hourly(), m("12.29"));
        assert_eq!(Price::parse_decimal("0.000003").unwrap().per_gpu(2).hourly().micros(), 2);
        assert_eq!(Price::parse_decimal("0.000001").unwrap().per_gpu(2).hourly().micros(), 0);
        assert_eq!(p.cost_for(Duration::from_secs(3600)), m("98.32"));
        assert_eq!(p.cost_for(Duration::from_secs(60)), m("1.638667"));
        assert_eq!(p.cost_for(Duration::ZERO), Money::ZERO);
    }

    #[test]
    fn amounts_beyond_the_input_bound_are_refused_by_name() {
        assert_eq!(m("1000000000").micros(), Money::MAX_INPUT.micros());
        assert_eq!(m("-1000000000"), -Money::MAX_INPUT);
        assert_eq!(m("000000000000000000001.5"), m("1.5"), "leading zeros are not size");
        for big in ["1000000000.000001", "1000000001", "9999999999999", "99999999999999999999999"] {
            let e = Money::parse_decimal(big).unwrap_err().to_string();
            assert!(e.contains(big) && e.contains("$1,000,000,000"), "{big}: {e}");
        }
    }

    #[test]
    fn arithmetic_never_wraps_or_panics() {
        let max = Money::MAX;
        assert_eq!(max + Money::from_micros(1), Money::MAX);
        assert_eq!(Money::MIN - Money::from_micros(1), Money::MIN);
        assert_eq!(-Money::MIN, Money::MAX);
        assert_eq!(max.times(3), Money::MAX);
        assert_eq!(Money::MIN.times(2), Money::MIN);
        assert_eq!(max.divided_by(0), Money::ZERO);
        assert_eq!([max, max, max].iter().sum::<Money>(), Money::MAX);
        let p = Price::per_hour(Money::MAX_INPUT);
        assert_eq!(p.cost_for(Duration::MAX), Money::MAX);
        assert_eq!(p.cost_for(Duration::from_secs(3600)), Money::MAX_INPUT);

        let e = max.try_add(m("0.01")).unwrap_err().to_string();
        assert!(e.contains("money overflow") && e.contains("$9223372036854.775807 + $0.01"), "{e}");
        let e = Money::MIN.try_sub(m("2")).unwrap_err().to_string();
        assert!(e.contains("- $2.00"), "{e}");
        let e = Money::MAX_INPUT.try_times(10_000_000).unwrap_err().to_string();
        assert!(e.contains("$1000000000.00 × 10000000"), "{e}");
        let e = p.try_cost_for(Duration::from_secs(400 * 24 * 3600 * 100)).unwrap_err().to_string();
        assert!(e.contains("$1000000000.00/h for 3456000000 s"), "{e}");
        assert_eq!(Money::MAX_INPUT.try_times(9_000), Ok(Money::from_dollars(9_000_000_000_000)));
        assert_eq!(p.try_cost_for(Duration::from_secs(1800)), Ok(Money::from_dollars(500_000_000)));
    }

    #[test]
    fn serde_uses_decimal_strings() {
        let j = serde_json::to_string(&m("12.5")).unwrap();
        assert_eq!(j, "\"12.50\"");
        let back: Money = serde_json::from_str(&j).unwrap();
        assert_eq!(back, m("12.5"));
        assert!(serde_json::from_str::<Money>("\"twelve\"").is_err());
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(micros in -10_000_000_000_000i64..10_000_000_000_000) {
            let x = Money::from_micros(micros);
            prop_assert_eq!(Money::parse_decimal(&x.to_decimal_string()).unwrap(), x);
        }

        #[test]
        fn per_second_charges_sum_to_within_a_micro_dollar_per_charge(
            micros_per_hour in 0i64..200_000_000, seconds in 1u64..5000,
        ) {
            let p = Price::per_hour(Money::from_micros(micros_per_hour));
            let whole = p.cost_for(Duration::from_secs(seconds));
            let pieces: Money = (0..seconds).map(|_| p.cost_for(Duration::from_secs(1))).sum();
            let diff = (whole - pieces).micros().abs();
            prop_assert!(diff as u64 <= seconds, "diff {diff} for {seconds} charges");
        }
    }
}
