//! [`Policy`]: which [`CastRule`] each op gets on one device kind; PyTorch's
//! tables; the policy string format; the process-wide default policies.

use crate::pytorch;
use crate::{CastRule, PolicyParseError};
use amp_tensor::DeviceKind;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock, RwLock};

/// A map from op name to [`CastRule`] for one device kind. Ops it does not
/// name are [`CastRule::Passthrough`].
///
/// As a string (`Display` / `FromStr`) a policy reads
/// `"cuda: matmul=lower, softmax=f32"`: the device kind, a colon, then
/// `op=rule` pairs separated by commas, with rules `lower`, `f32`, `promote`
/// and `passthrough` (`lower_precision_fp`, `fp32` and `float32` are accepted
/// too). Parsing starts from an empty policy; [`Policy::apply_overrides`]
/// applies `op=rule` pairs to an existing one.
///
/// ```
/// use amp_autocast::{CastRule, Policy};
/// use amp_tensor::DeviceKind;
///
/// let p: Policy = "cuda: matmul=lower, softmax=f32".parse()?;
/// assert_eq!(p.rule("softmax"), CastRule::Float32);
/// assert_eq!(p.rule("relu"), CastRule::Passthrough);
/// assert_eq!(p.to_string(), "cuda: matmul=lower, softmax=f32");
///
/// let mut q = Policy::pytorch(DeviceKind::Cuda);
/// q.apply_overrides("linear=f32, my_op=lower")?;
/// assert_eq!(q.rule("linear"), CastRule::Float32);
/// # Ok::<(), amp_autocast::PolicyParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    kind: DeviceKind,
    rules: BTreeMap<String, CastRule>,
}

impl Policy {
    /// A policy that names no op: everything passes through.
    pub fn empty(kind: DeviceKind) -> Policy {
        Policy {
            kind,
            rules: BTreeMap::new(),
        }
    }

    /// PyTorch's autocast lists for `kind` (`aten/src/ATen/autocast_mode.cpp`):
    /// every ATen name in them, plus every op of this project (see the table in
    /// the crate docs).
    pub fn pytorch(kind: DeviceKind) -> Policy {
        let mut p = Policy::empty(kind);
        let lists: Vec<(&[&str], CastRule)> = match kind {
            DeviceKind::Cuda => vec![
                (pytorch::CUDA_LOWER_PRECISION, CastRule::LowerPrecision),
                (pytorch::CUDA_FP32, CastRule::Float32),
                (pytorch::CUDA_FP32_OUTPUT_DTYPE, CastRule::Float32),
                (pytorch::CUDA_PROMOTE, CastRule::Promote),
            ],
            DeviceKind::Cpu => vec![
                (pytorch::CPU_LOWER_PRECISION, CastRule::LowerPrecision),
                (pytorch::CPU_FP32, CastRule::Float32),
                (pytorch::CPU_PROMOTE, CastRule::Promote),
            ],
        };
        for (names, rule) in lists {
            for name in names {
                p.rules.insert((*name).to_string(), rule);
            }
        }
        for &(op, cuda, cpu) in pytorch::PROJECT_OPS {
            p.rules.insert(
                op.to_string(),
                if kind == DeviceKind::Cuda { cuda } else { cpu },
            );
        }
        p
    }

    /// The project's own ops (every name `amp_tensor` dispatches), in table order.
    pub fn project_ops() -> impl Iterator<Item = &'static str> {
        pytorch::PROJECT_OPS.iter().map(|p| p.0)
    }

    /// The device kind the policy was written for.
    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    /// The same rules, labelled for another device kind (for instance to try
    /// the CUDA table on CPU tensors).
    pub fn retarget(mut self, kind: DeviceKind) -> Policy {
        self.kind = kind;
        self
    }

    /// The rule for `op` ([`CastRule::Passthrough`] when the policy does not name it).
    pub fn rule(&self, op: &str) -> CastRule {
        self.rules.get(op).copied().unwrap_or(CastRule::Passthrough)
    }

    /// The rule the policy names for `op`, if any.
    pub fn explicit_rule(&self, op: &str) -> Option<CastRule> {
        self.rules.get(op).copied()
    }

    /// Sets the rule of `op` (a built-in or a custom op name) and returns the previous one.
    pub fn set(&mut self, op: impl Into<String>, rule: CastRule) -> Option<CastRule> {
        self.rules.insert(op.into(), rule)
    }

    /// [`Policy::set`] in builder style.
    pub fn with(mut self, op: impl Into<String>, rule: CastRule) -> Policy {
        self.set(op, rule);
        self
    }

    /// Forgets the rule of `op` (it passes through again) and returns it.
    pub fn remove(&mut self, op: &str) -> Option<CastRule> {
        self.rules.remove(op)
    }

    /// Every named op and its rule, sorted by name.
    pub fn rules(&self) -> impl Iterator<Item = (&str, CastRule)> {
        self.rules.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// The named ops with rule `rule`, sorted.
    pub fn ops_with(&self, rule: CastRule) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .filter(move |(_, r)| **r == rule)
            .map(|(k, _)| k.as_str())
    }

    /// Applies `op=rule` pairs separated by commas (`"linear=f32, my_op=lower"`).
    /// On error the policy is unchanged.
    pub fn apply_overrides(&mut self, overrides: &str) -> Result<(), PolicyParseError> {
        let mut cursor = Cursor::new(overrides);
        let entries = cursor.entries()?;
        for (op, rule) in entries {
            self.rules.insert(op, rule);
        }
        Ok(())
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.kind)?;
        for (i, (op, rule)) in self.rules.iter().enumerate() {
            write!(f, "{} {op}={rule}", if i == 0 { "" } else { "," })?;
        }
        Ok(())
    }
}

impl FromStr for Policy {
    type Err = PolicyParseError;

    fn from_str(s: &str) -> Result<Policy, PolicyParseError> {
        let mut cursor = Cursor::new(s);
        cursor.skip_ws();
        let (col, word) = cursor.word(|c| c.is_ascii_alphanumeric() || c == '_');
        let kind = match word.as_str() {
            "cpu" => DeviceKind::Cpu,
            "cuda" => DeviceKind::Cuda,
            _ => return Err(cursor.error_at(col, "a device kind, `cpu` or `cuda`")),
        };
        cursor.skip_ws();
        cursor.expect(':', "`:` after the device kind")?;
        let mut policy = Policy::empty(kind);
        for (op, rule) in cursor.entries()? {
            policy.rules.insert(op, rule);
        }
        Ok(policy)
    }
}

/// A character cursor over a policy string that reports errors by column.
struct Cursor<'a> {
    input: &'a str,
    chars: Vec<char>,
    pos: usize,
}

fn is_op_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

impl<'a> Cursor<'a> {
    fn new(input: &'a str) -> Self {
        Cursor {
            input,
            chars: input.chars().collect(),
            pos: 0,
        }
    }

    fn skip_ws(&mut self) {
        while self.chars.get(self.pos).is_some_and(|c| c.is_whitespace()) {
            self.pos += 1;
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    /// Reads a run of characters accepted by `ok`; returns its start and text.
    fn word(&mut self, ok: impl Fn(char) -> bool) -> (usize, String) {
        let start = self.pos;
        while self.chars.get(self.pos).is_some_and(|&c| ok(c)) {
            self.pos += 1;
        }
        (start, self.chars[start..self.pos].iter().collect())
    }

    /// An error for the token starting at `start`: the run up to the next
    /// separator (or the one character there).
    fn error_at(&self, start: usize, expected: &str) -> PolicyParseError {
        let mut end = start;
        while self
            .chars
            .get(end)
            .is_some_and(|&c| !c.is_whitespace() && !matches!(c, ',' | '=' | ':'))
        {
            end += 1;
        }
        if end == start && start < self.chars.len() {
            end = start + 1;
        }
        PolicyParseError {
            input: self.input.to_string(),
            column: start + 1,
            token: self.chars[start.min(self.chars.len())..end.min(self.chars.len())]
                .iter()
                .collect(),
            expected: expected.to_string(),
        }
    }

    fn expect(&mut self, c: char, expected: &str) -> Result<(), PolicyParseError> {
        if self.chars.get(self.pos) == Some(&c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error_at(self.pos, expected))
        }
    }

    /// `op=rule` pairs separated by commas, to the end of the input (a
    /// trailing comma is allowed; an op may appear once).
    fn entries(&mut self) -> Result<Vec<(String, CastRule)>, PolicyParseError> {
        let mut out: Vec<(String, CastRule)> = Vec::new();
        loop {
            self.skip_ws();
            if self.at_end() {
                return Ok(out);
            }
            let (op_col, op) = self.word(is_op_char);
            if op.is_empty() || !op.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                return Err(self.error_at(
                    op_col,
                    "an op name (letters, digits, `_` and `.`, not starting with a digit)",
                ));
            }
            if out.iter().any(|(o, _)| *o == op) {
                return Err(
                    self.error_at(op_col, "an op not given before (each op may appear once)")
                );
            }
            self.skip_ws();
            self.expect('=', "`=` after the op name")?;
            self.skip_ws();
            let (rule_col, rule) = self.word(|c| c.is_ascii_alphanumeric() || c == '_');
            let Some(rule) = CastRule::from_name(&rule) else {
                return Err(self.error_at(
                    rule_col,
                    "a rule: `lower`, `f32`, `promote` or `passthrough`",
                ));
            };
            out.push((op, rule));
            self.skip_ws();
            if self.at_end() {
                return Ok(out);
            }
            self.expect(',', "`,` or the end of the policy")?;
        }
    }
}

// ----- process-wide defaults ------------------------------------------------

fn defaults() -> &'static RwLock<[Arc<Policy>; 2]> {
    static DEFAULTS: OnceLock<RwLock<[Arc<Policy>; 2]>> = OnceLock::new();
    DEFAULTS.get_or_init(|| {
        RwLock::new([
            Arc::new(Policy::pytorch(DeviceKind::Cpu)),
            Arc::new(Policy::pytorch(DeviceKind::Cuda)),
        ])
    })
}

fn slot(kind: DeviceKind) -> usize {
    match kind {
        DeviceKind::Cpu => 0,
        DeviceKind::Cuda => 1,
    }
}

pub(crate) fn default_policy_arc(kind: DeviceKind) -> Arc<Policy> {
    defaults().read().unwrap_or_else(|e| e.into_inner())[slot(kind)].clone()
}

/// The policy a region of `kind` starts from when neither the builder nor an
/// enclosing region gives one: [`Policy::pytorch`] plus every
/// [`register_op_rule`] made so far.
pub fn default_policy(kind: DeviceKind) -> Policy {
    (*default_policy_arc(kind)).clone()
}

/// Registers (or overrides) the rule of op `op` in the process-wide default
/// policy of `kind`, for every region opened afterwards on any thread — the
/// way to give a custom op (one that calls `amp_tensor::dispatch::dispatch("my_op", ..)`)
/// a rule once. Returns the previous rule.
pub fn register_op_rule(
    kind: DeviceKind,
    op: impl Into<String>,
    rule: CastRule,
) -> Option<CastRule> {
    let mut d = defaults().write().unwrap_or_else(|e| e.into_inner());
    Arc::make_mut(&mut d[slot(kind)]).set(op, rule)
}

/// Restores the process-wide default policy of `kind` to [`Policy::pytorch`].
pub fn reset_default_policy(kind: DeviceKind) {
    defaults().write().unwrap_or_else(|e| e.into_inner())[slot(kind)] =
        Arc::new(Policy::pytorch(kind));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_print_round_trip() {
        let p: Policy = "  cuda :matmul = lower,softmax=fp32 , my.op_2=promote, relu=passthrough,"
            .parse()
            .unwrap();
        assert_eq!(p.kind(), DeviceKind::Cuda);
        assert_eq!(p.rule("softmax"), CastRule::Float32);
        assert_eq!(p.rule("my.op_2"), CastRule::Promote);
        assert_eq!(
            p.to_string(),
            "cuda: matmul=lower, my.op_2=promote, relu=passthrough, softmax=f32"
        );
        assert_eq!(p.to_string().parse::<Policy>().unwrap(), p);
        for kind in [DeviceKind::Cpu, DeviceKind::Cuda] {
            let full = Policy::pytorch(kind);
            assert_eq!(full.to_string().parse::<Policy>().unwrap(), full);
        }
        assert_eq!(
            "cpu:".parse::<Policy>().unwrap(),
            Policy::empty(DeviceKind::Cpu)
        );
    }

    fn err(s: &str) -> PolicyParseError {
        s.parse::<Policy>().unwrap_err()
    }

    #[test]
    fn errors_point_at_the_bad_token() {
        let e = err("cuda: matmul=lowr, softmax=f32");
        assert_eq!((e.column, e.token.as_str()), (14, "lowr"));
        assert!(e.expected.contains("`lower`"));
        let shown = e.to_string();
        assert!(
            shown.contains("column 14") && shown.contains("`lowr`"),
            "{shown}"
        );
        assert!(
            shown.ends_with(&format!("\n{}^^^^", " ".repeat(2 + 13))),
            "{shown:?}"
        );

        let e = err("tpu: matmul=lower");
        assert_eq!((e.column, e.token.as_str()), (1, "tpu"));
        let e = err("cuda matmul=lower");
        assert_eq!((e.column, e.token.as_str()), (6, "matmul"));
        assert!(e.expected.contains("`:`"));
        let e = err("cuda: matmul lower");
        assert_eq!((e.column, e.token.as_str()), (14, "lower"));
        let e = err("cuda: matmul=lower softmax=f32");
        assert_eq!((e.column, e.token.as_str()), (20, "softmax"));
        let e = err("cuda: matmul=");
        assert_eq!((e.column, e.token.as_str()), (14, ""));
        assert!(e.to_string().contains("end of input"));
        let e = err("cuda: 9op=lower");
        assert_eq!((e.column, e.token.as_str()), (7, "9op"));
        let e = err("cuda: a=lower, a=f32");
        assert_eq!((e.column, e.token.as_str()), (16, "a"));
        let e = err("cpu: ,");
        assert_eq!((e.column, e.token.as_str()), (6, ","));
    }

    #[test]
    fn overrides_apply_atomically() {
        let mut p = Policy::pytorch(DeviceKind::Cpu);
        p.apply_overrides("linear=f32, my_op=lower").unwrap();
        assert_eq!(p.rule("linear"), CastRule::Float32);
        assert_eq!(p.rule("my_op"), CastRule::LowerPrecision);
        let before = p.clone();
        let e = p.apply_overrides("matmul=f32, softmax=bogus").unwrap_err();
        assert_eq!((e.column, e.token.as_str()), (21, "bogus"));
        assert_eq!(p, before);
    }

    #[test]
    fn pytorch_policies_hold_every_project_op() {
        for kind in [DeviceKind::Cpu, DeviceKind::Cuda] {
            let p = Policy::pytorch(kind);
            for op in Policy::project_ops() {
                assert!(
                    p.explicit_rule(op).is_some(),
                    "{op} missing from the {kind} policy"
                );
            }
            assert_eq!(p.rule("not_an_op"), CastRule::Passthrough);
        }
        let cuda = Policy::pytorch(DeviceKind::Cuda);
        assert_eq!(cuda.rule("bmm"), CastRule::LowerPrecision);
        assert_eq!(cuda.rule("cumsum"), CastRule::Float32);
        assert_eq!(cuda.rule("addcmul"), CastRule::Promote);
        let cpu = Policy::pytorch(DeviceKind::Cpu);
        assert_eq!(cpu.rule("conv2d"), CastRule::LowerPrecision);
        assert_eq!(cpu.rule("softmax"), CastRule::Passthrough);
        assert_eq!(cpu.rule("index_copy"), CastRule::Promote);
    }
}
