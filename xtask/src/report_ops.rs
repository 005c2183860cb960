//! The op-accuracy table: grouped by op, failing rows last, plus a per-dtype
//! summary of what each precision costs.

use crate::accuracy::ops::OpRow;
use amp_dtype::DType;
use std::fmt::Write as _;

const HEADERS: [&str; 11] = [
    "case",
    "dtype",
    "backend",
    "n",
    "max abs err",
    "max rel err",
    "norm rel err",
    "ulps",
    "nan/inf",
    "tol (rel)",
    "result",
];
const NUMERIC: [bool; 11] = [
    false, false, false, true, true, true, true, true, true, true, false,
];

fn cells(r: &OpRow) -> [String; 11] {
    [
        r.case.clone(),
        r.dtype.name().to_string(),
        r.backend.clone(),
        r.n.to_string(),
        format!("{:.2e}", r.max_abs),
        format!("{:.2e}", r.max_rel),
        format!("{:.2e}", r.norm_rel),
        format!("{:.1}", r.ulps),
        r.nan_inf.to_string(),
        format!("{:.0e}", r.tolerance.rel),
        if r.pass { "ok" } else { "FAIL" }.to_string(),
    ]
}

fn line(cells: &[String; 11], widths: &[usize; 11]) -> String {
    let mut s = String::new();
    for (i, c) in cells.iter().enumerate() {
        let w = widths[i];
        if NUMERIC[i] {
            let _ = write!(s, "{c:>w$}  ");
        } else {
            let _ = write!(s, "{c:<w$}  ");
        }
    }
    s.trim_end().to_string()
}

/// The table as text.
pub fn render(rows: &[OpRow]) -> String {
    let mut widths = HEADERS.map(str::len);
    for r in rows {
        for (w, c) in widths.iter_mut().zip(cells(r)) {
            *w = (*w).max(c.chars().count());
        }
    }
    let header = line(&HEADERS.map(String::from), &widths);
    let rule = "-".repeat(header.chars().count());
    let mut ops: Vec<&str> = Vec::new();
    for r in rows {
        if !ops.contains(&r.op) {
            ops.push(r.op);
        }
    }
    let mut out = String::new();
    for op in ops {
        let _ = writeln!(out, "== {op} ==\n{header}\n{rule}");
        for r in rows.iter().filter(|r| r.op == op) {
            let _ = writeln!(out, "{}", line(&cells(r), &widths));
        }
        out.push('\n');
    }
    let _ = writeln!(out, "== what each precision costs (largest norm-wise relative error over all ops; all with f32 accumulation) ==");
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        let of: Vec<&OpRow> = rows
            .iter()
            .filter(|r| r.dtype == dtype && r.op != "cast")
            .collect();
        if let Some(worst) = of.iter().max_by(|a, b| a.norm_rel.total_cmp(&b.norm_rel)) {
            let all_pass = of.iter().all(|r| r.pass);
            let _ = writeln!(
                out,
                "{:<5} {:.2e} ({} {}, {}) — f32 accumulation {}",
                dtype.name(),
                worst.norm_rel,
                worst.op,
                worst.case,
                worst.backend,
                if all_pass {
                    "confirmed: every row within tolerance"
                } else {
                    "NOT confirmed: rows failed"
                }
            );
        }
    }
    out.push('\n');
    let failing: Vec<&OpRow> = rows.iter().filter(|r| !r.pass).collect();
    if failing.is_empty() {
        let _ = writeln!(out, "all {} op rows passed", rows.len());
    } else {
        let _ = writeln!(
            out,
            "{} of {} op rows FAILED:\n{header}\n{rule}",
            failing.len(),
            rows.len()
        );
        for r in &failing {
            let _ = writeln!(out, "{}", line(&cells(r), &widths));
        }
        for r in &failing {
            let _ = writeln!(
                out,
                "  {} {} {} [{}]: {}",
                r.op,
                r.case,
                r.dtype,
                r.backend,
                r.note.as_deref().unwrap_or("")
            );
        }
    }
    out
}

fn number(x: f64) -> serde_json::Value {
    serde_json::Number::from_f64(x).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// The rows as JSON values.
pub fn to_json(rows: &[OpRow]) -> Vec<serde_json::Value> {
    rows.iter()
        .map(|r| {
            serde_json::json!({
                "group": r.op, "name": r.case, "dtype": r.dtype.name(), "backend": r.backend, "n": r.n,
                "max_abs_err": number(r.max_abs), "max_rel_err": number(r.max_rel), "norm_rel_err": number(r.norm_rel),
                "ulps": number(r.ulps), "nan_inf": r.nan_inf, "tolerance_rel": r.tolerance.rel,
                "tolerance_abs": r.tolerance.abs, "pass": r.pass, "note": r.note,
            })
        })
        .collect()
}
