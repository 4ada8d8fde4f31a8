//! CSV that opens in Excel: UTF-8 with a byte-order mark (so Excel does not read it
//! as Windows-1252), CRLF line ends, a header row, and `,` — or `;`, which Dutch Excel
//! expects, with `?sep=semicolon`. A field that starts like a formula (`=`, `+`, `-`,
//! `@`) gets a leading `'`, so no cell is ever evaluated (CSV injection).

use crate::error::Error;

/// The UTF-8 byte-order mark that makes Excel read the file as UTF-8.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The field separator, from the `sep` query parameter (parsed with the API's requests).
pub use sync_core::api::Separator;

fn guard(field: &str) -> std::borrow::Cow<'_, str> {
    // Negative numbers stay numbers; anything else starting like a formula is quoted.
    let numeric = field.parse::<f64>().is_ok();
    match field.chars().next() {
        Some('=' | '+' | '-' | '@') if !numeric => format!("'{field}").into(),
        _ => field.into(),
    }
}

/// Rows as CSV text, each ending in CRLF.
pub fn rows<I, R, S>(sep: Separator, rows: I) -> Result<Vec<u8>, Error>
where
    I: IntoIterator<Item = R>,
    R: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut writer = csv::WriterBuilder::new()
        .delimiter(sep.byte())
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    for row in rows {
        let fields: Vec<String> = row
            .into_iter()
            .map(|f| guard(f.as_ref()).into_owned())
            .collect();
        writer
            .write_record(&fields)
            .map_err(|e| Error::Invalid(format!("csv: {e}")))?;
    }
    writer
        .into_inner()
        .map_err(|e| Error::Invalid(format!("csv: {e}")))
}

/// The BOM and the header row.
pub fn header(sep: Separator, columns: &[&str]) -> Result<Vec<u8>, Error> {
    let mut out = BOM.to_vec();
    out.extend(rows(sep, [columns])?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quotes what needs quoting, defuses formulas, keeps numbers, ends lines in CRLF.
    #[test]
    fn excel_friendly() -> Result<(), Error> {
        let out = rows(
            Separator::Comma,
            [["a,b", "=1+1", "-3.5", "gewoon", "zeg \"hoi\""]],
        )?;
        assert_eq!(
            String::from_utf8_lossy(&out),
            "\"a,b\",'=1+1,-3.5,gewoon,\"zeg \"\"hoi\"\"\"\r\n"
        );
        let out = header(Separator::Semicolon, &["wijk", "value"])?;
        assert_eq!(out, b"\xEF\xBB\xBFwijk;value\r\n");
        assert!(Separator::parse(Some("tab")).is_err());
        Ok(())
    }
}
