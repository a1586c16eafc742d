//! The knobs of a call, with joblib's meanings, and their validation.

use crate::error::ConfigError;
use std::fmt;
use std::str::FromStr;

/// How many tasks run at once, in joblib's convention.
///
/// `n > 0` means `n` workers; `n < 0` means `cpu_count() + 1 + n` (so `-1` is every CPU and
/// `-2` every CPU but one), never fewer than 1; `0` is an error.
/// `cpus` is only asked for when `n_jobs` is negative (it reads cgroup files: tens of µs).
pub(crate) fn effective_n_jobs(
    n_jobs: Option<i64>,
    cpus: impl FnOnce() -> usize,
) -> Result<usize, ConfigError> {
    match n_jobs {
        None => Ok(1),
        Some(0) => Err(ConfigError::new(
            "n_jobs",
            "0 is not a number of workers; use a positive count, or -1 for every CPU",
        )),
        Some(n) if n > MAX_WORKERS as i64 => Err(ConfigError::new(
            "n_jobs",
            format!("{n} workers is more than joblet starts (at most {MAX_WORKERS})"),
        )),
        Some(n) if n > 0 => Ok(n as usize),
        Some(n) => {
            let cpus = i64::try_from(cpus()).unwrap_or(i64::MAX);
            let n = (cpus + 1).saturating_add(n).clamp(1, MAX_WORKERS as i64);
            Ok(n as usize)
        }
    }
}

/// The most workers a call starts. Far above any machine's core count (threads for I/O-bound
/// tasks may exceed it, but not by this much), and low enough that the bookkeeping per
/// worker and `pre_dispatch` expressions stay small numbers.
pub(crate) const MAX_WORKERS: usize = 1 << 16;

/// How many tasks a worker takes at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchSize {
    /// Adapt the batch size to the measured duration of batches (joblib's `"auto"`).
    #[default]
    Auto,
    /// Always this many tasks per batch (at least 1).
    Fixed(usize),
}

impl From<usize> for BatchSize {
    fn from(n: usize) -> Self {
        BatchSize::Fixed(n)
    }
}

impl FromStr for BatchSize {
    type Err = ConfigError;

    /// Parses `"auto"` or a positive integer.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let s = s.trim();
        if s == "auto" {
            return Ok(BatchSize::Auto);
        }
        match s.parse::<usize>() {
            Ok(n) if n > 0 => Ok(BatchSize::Fixed(n)),
            _ => Err(ConfigError::new(
                "batch_size",
                format!("{s:?} is neither \"auto\" nor a positive integer"),
            )),
        }
    }
}

impl BatchSize {
    pub(crate) fn validate(self) -> Result<Self, ConfigError> {
        match self {
            BatchSize::Fixed(0) => Err(ConfigError::new(
                "batch_size",
                "0 tasks per batch; use a positive count or BatchSize::Auto",
            )),
            other => Ok(other),
        }
    }
}

/// How many batches may be dispatched ahead of the results the caller has taken.
///
/// joblib's `pre_dispatch`: an integer, `"all"`, or an arithmetic expression in `n_jobs`
/// such as `"2*n_jobs"` (the default). It bounds the memory of a lazily consumed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreDispatch {
    /// No bound: the whole input may be dispatched at once.
    All,
    /// At most this many batches in flight.
    Count(usize),
    /// An expression in `n_jobs` (`+ - * /` and `//`, integers, parentheses), e.g. `"3*n_jobs"`.
    Expr(String),
}

impl Default for PreDispatch {
    fn default() -> Self {
        PreDispatch::Expr("2*n_jobs".to_owned())
    }
}

impl From<usize> for PreDispatch {
    fn from(n: usize) -> Self {
        PreDispatch::Count(n)
    }
}

impl From<&str> for PreDispatch {
    fn from(s: &str) -> Self {
        if s.trim() == "all" {
            PreDispatch::All
        } else {
            PreDispatch::Expr(s.to_owned())
        }
    }
}

impl PreDispatch {
    /// The window in batches for `n_jobs` workers; `None` means unbounded.
    pub(crate) fn resolve(&self, n_jobs: usize) -> Result<Option<usize>, ConfigError> {
        let n = match self {
            PreDispatch::All => return Ok(None),
            PreDispatch::Count(n) => i64::try_from(*n).unwrap_or(i64::MAX),
            PreDispatch::Expr(e) => ExprParser::new(e, n_jobs as i64).parse()?,
        };
        if n < 1 {
            return Err(ConfigError::new(
                "pre_dispatch",
                format!("{self} gives {n} batches; at least 1 is needed"),
            ));
        }
        Ok(Some(n as usize))
    }
}

impl fmt::Display for PreDispatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PreDispatch::All => f.write_str("\"all\""),
            PreDispatch::Count(n) => write!(f, "{n}"),
            PreDispatch::Expr(e) => write!(f, "{e:?}"),
        }
    }
}

/// A recursive-descent evaluator for the small arithmetic language of `pre_dispatch`.
struct ExprParser<'a> {
    text: &'a str,
    rest: &'a str,
    n_jobs: i64,
}

impl<'a> ExprParser<'a> {
    fn new(text: &'a str, n_jobs: i64) -> Self {
        ExprParser {
            text,
            rest: text,
            n_jobs,
        }
    }

    fn error(&self, what: &str) -> ConfigError {
        let offset = self.text.len() - self.rest.len();
        ConfigError::new(
            "pre_dispatch",
            format!("cannot evaluate {:?}: {what} at offset {offset}", self.text),
        )
    }

    fn parse(mut self) -> Result<i64, ConfigError> {
        let v = self.sum()?;
        self.skip_ws();
        if !self.rest.is_empty() {
            return Err(self.error("unexpected text"));
        }
        Ok(v)
    }

    fn skip_ws(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        match self.rest.strip_prefix(token) {
            Some(r) => {
                self.rest = r;
                true
            }
            None => false,
        }
    }

    fn sum(&mut self) -> Result<i64, ConfigError> {
        let mut v = self.product()?;
        loop {
            if self.eat("+") {
                v = v
                    .checked_add(self.product()?)
                    .ok_or_else(|| self.error("overflow"))?;
            } else if self.eat("-") {
                v = v
                    .checked_sub(self.product()?)
                    .ok_or_else(|| self.error("overflow"))?;
            } else {
                return Ok(v);
            }
        }
    }

    fn product(&mut self) -> Result<i64, ConfigError> {
        let mut v = self.atom()?;
        loop {
            if self.eat("*") {
                v = v
                    .checked_mul(self.atom()?)
                    .ok_or_else(|| self.error("overflow"))?;
            } else if self.eat("//") || self.eat("/") {
                let d = self.atom()?;
                if d == 0 {
                    return Err(self.error("division by zero"));
                }
                v = v.div_euclid(d);
            } else {
                return Ok(v);
            }
        }
    }

    fn atom(&mut self) -> Result<i64, ConfigError> {
        if self.eat("(") {
            let v = self.sum()?;
            if !self.eat(")") {
                return Err(self.error("missing ')'"));
            }
            return Ok(v);
        }
        if self.eat("n_jobs") {
            return Ok(self.n_jobs);
        }
        if self.eat("-") {
            return Ok(-self.atom()?);
        }
        self.skip_ws();
        let digits = self.rest.len()
            - self
                .rest
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .len();
        if digits == 0 {
            return Err(self.error("expected a number, n_jobs or '('"));
        }
        let (num, rest) = self.rest.split_at(digits);
        let v = num.parse().map_err(|_| self.error("number too large"))?;
        self.rest = rest;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_jobs_follows_joblib() {
        assert_eq!(effective_n_jobs(None, || 8), Ok(1));
        assert_eq!(effective_n_jobs(Some(3), || 8), Ok(3));
        assert_eq!(effective_n_jobs(Some(-1), || 8), Ok(8));
        assert_eq!(effective_n_jobs(Some(-2), || 8), Ok(7));
        assert_eq!(effective_n_jobs(Some(-20), || 8), Ok(1));
        assert_eq!(effective_n_jobs(Some(i64::MIN), || 8), Ok(1));
        assert_eq!(
            effective_n_jobs(Some(0), || 8).unwrap_err().parameter(),
            "n_jobs"
        );
        let huge = effective_n_jobs(Some(i64::MAX), || 8).unwrap_err();
        assert_eq!(huge.parameter(), "n_jobs");
        assert_eq!(
            effective_n_jobs(Some(MAX_WORKERS as i64), || 8),
            Ok(MAX_WORKERS)
        );
    }

    #[test]
    fn pre_dispatch_expressions() {
        let r = |e: &str, n| PreDispatch::from(e).resolve(n);
        assert_eq!(r("2*n_jobs", 4), Ok(Some(8)));
        assert_eq!(r(" 3 * n_jobs + 1", 2), Ok(Some(7)));
        assert_eq!(r("(n_jobs + 1) // 2", 5), Ok(Some(3)));
        assert_eq!(r("10", 5), Ok(Some(10)));
        assert_eq!(r("all", 5), Ok(None));
        assert_eq!(
            PreDispatch::Count(0).resolve(2).unwrap_err().parameter(),
            "pre_dispatch"
        );
        let e = r("2*jobs", 4).unwrap_err();
        assert!(e.to_string().contains("offset 2"), "{e}");
        assert!(r("n_jobs - n_jobs", 4)
            .unwrap_err()
            .to_string()
            .contains("at least 1"));
        assert!(r("n_jobs / 0", 4).is_err());
        assert!(r("(2", 4).is_err());
    }

    #[test]
    fn batch_size_parsing() {
        assert_eq!("auto".parse::<BatchSize>(), Ok(BatchSize::Auto));
        assert_eq!(" 16 ".parse::<BatchSize>(), Ok(BatchSize::Fixed(16)));
        assert_eq!(
            "0".parse::<BatchSize>().unwrap_err().parameter(),
            "batch_size"
        );
        assert!("-3".parse::<BatchSize>().is_err());
        assert!(BatchSize::Fixed(0).validate().is_err());
    }
}
