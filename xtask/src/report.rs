//! Result rows of the checks, the aligned table they print as, and their JSON form.

use amp_dtype::DType;
use std::fmt::Write as _;

/// One line of the accuracy table: one check of one dtype on one backend.
#[derive(Debug, Clone)]
pub struct Row {
    /// The op or family the row belongs to (`"conversion"`, later `"matmul"`, …);
    /// the table is grouped by it.
    pub group: &'static str,
    /// What was checked (`"decode bits -> f32"`, `"encode f32 (structured)"`, …).
    pub name: String,
    /// The dtype under test.
    pub dtype: DType,
    /// Who computed the result (`"scalar"`, `"cpu"`, `"cuda"`).
    pub backend: &'static str,
    /// How many values were checked.
    pub checked: u64,
    /// How many results differ from the reference.
    pub mismatches: u64,
    /// Of the mismatches, how many disagree about NaN or infinity.
    pub nan_inf: u64,
    /// Largest absolute error of a result against the exact input.
    pub max_abs_err: f64,
    /// Largest relative error of a result against the exact input, over inputs
    /// in the dtype's normal range.
    pub max_rel_err: f64,
    /// Largest error of a result against the exact input, in ulps of the dtype.
    pub ulps: f64,
    /// The largest `ulps` that passes.
    pub tolerance_ulps: f64,
    /// Whether the row passed: no mismatch and `ulps` within tolerance.
    pub pass: bool,
    /// The first failing value, described, if any.
    pub example: Option<String>,
}

const HEADERS: [&str; 10] = [
    "dtype",
    "check",
    "backend",
    "checked",
    "mismatches",
    "nan/inf",
    "max ulps",
    "tol ulps",
    "max rel err",
    "result",
];

fn cells(row: &Row) -> [String; 10] {
    [
        row.dtype.name().to_string(),
        row.name.clone(),
        row.backend.to_string(),
        row.checked.to_string(),
        row.mismatches.to_string(),
        row.nan_inf.to_string(),
        format!("{:.3}", row.ulps),
        format!("{:.3}", row.tolerance_ulps),
        format!("{:.3e}", row.max_rel_err),
        if row.pass { "ok" } else { "FAIL" }.to_string(),
    ]
}

/// Which columns are right-aligned (the numbers).
const NUMERIC: [bool; 10] = [
    false, false, false, true, true, true, true, true, true, false,
];

fn render_rows(rows: &[&Row], widths: &[usize; 10], out: &mut String) {
    for row in rows {
        let cells = cells(row);
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let w = widths[i];
            if NUMERIC[i] {
                let _ = write!(line, "{cell:>w$}  ");
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// The table: rows grouped by `group` (in first-seen order), then the failing
/// rows again, last, with their first failing value.
pub fn render(rows: &[Row]) -> String {
    let mut widths = HEADERS.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(cells(row)) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut header = String::new();
    for (i, h) in HEADERS.iter().enumerate() {
        let w = widths[i];
        if NUMERIC[i] {
            let _ = write!(header, "{h:>w$}  ");
        } else {
            let _ = write!(header, "{h:<w$}  ");
        }
    }
    let header = header.trim_end().to_string();
    let rule = "-".repeat(header.chars().count());

    let mut groups: Vec<&'static str> = Vec::new();
    for row in rows {
        if !groups.contains(&row.group) {
            groups.push(row.group);
        }
    }
    let mut out = String::new();
    for group in groups {
        let _ = writeln!(out, "== {group} ==");
        let _ = writeln!(out, "{header}\n{rule}");
        let members: Vec<&Row> = rows.iter().filter(|r| r.group == group).collect();
        render_rows(&members, &widths, &mut out);
        out.push('\n');
    }
    let failing: Vec<&Row> = rows.iter().filter(|r| !r.pass).collect();
    let passed = rows.len() - failing.len();
    if failing.is_empty() {
        let _ = writeln!(out, "all {passed} rows passed");
    } else {
        let _ = writeln!(out, "{} of {} rows FAILED:", failing.len(), rows.len());
        let _ = writeln!(out, "{header}\n{rule}");
        render_rows(&failing, &widths, &mut out);
        for row in &failing {
            if let Some(example) = &row.example {
                let _ = writeln!(
                    out,
                    "  {} {} [{}]: {example}",
                    row.dtype, row.name, row.group
                );
            }
        }
    }
    out
}

/// A JSON number, or null where JSON has none (NaN, infinity).
fn number(x: f64) -> serde_json::Value {
    serde_json::Number::from_f64(x).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// The rows as a JSON document: `{"mode", "pass", "rows": [...]}`.
pub fn to_json(rows: &[Row], mode: &str) -> serde_json::Value {
    let rows_json: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "group": r.group,
                "name": r.name,
                "dtype": r.dtype.name(),
                "backend": r.backend,
                "checked": r.checked,
                "mismatches": r.mismatches,
                "nan_inf": r.nan_inf,
                "max_abs_err": number(r.max_abs_err),
                "max_rel_err": number(r.max_rel_err),
                "ulps": number(r.ulps),
                "tolerance_ulps": number(r.tolerance_ulps),
                "pass": r.pass,
                "example": r.example,
            })
        })
        .collect();
    serde_json::json!({
        "mode": mode,
        "pass": rows.iter().all(|r| r.pass),
        "rows": rows_json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, pass: bool) -> Row {
        Row {
            group: "conversion",
            name: name.to_string(),
            dtype: DType::BF16,
            backend: "scalar",
            checked: 10,
            mismatches: u64::from(!pass),
            nan_inf: 0,
            max_abs_err: 0.0,
            max_rel_err: 0.0,
            ulps: 0.5,
            tolerance_ulps: 0.5,
            pass,
            example: (!pass).then(|| "1.5 gave 2".to_string()),
        }
    }

    #[test]
    fn failing_rows_come_last_and_json_has_every_field() {
        let rows = [row("a", true), row("bad one", false)];
        let text = render(&rows);
        let tail = text.split("FAILED").nth(1).expect("a failure section");
        assert!(
            tail.contains("bad one") && tail.contains("1.5 gave 2"),
            "{text}"
        );
        let json = to_json(&rows, "quick");
        assert_eq!(json["pass"], false);
        assert_eq!(json["rows"][1]["name"], "bad one");
        assert_eq!(json["rows"][0]["dtype"], "bf16");
        assert!(render(&rows[..1]).contains("all 1 rows passed"));
    }
}
