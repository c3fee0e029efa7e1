//! Plain-text tables for stdout: left-aligned columns, a dashed rule under
//! the header.

/// Left-aligned columns separated by two spaces, rows of a fixed width.
#[must_use]
pub fn render_table<const N: usize>(header: &[&str; N], body: &[[String; N]]) -> String {
    render(header, body)
}

/// Left-aligned columns separated by two spaces; every row as wide as the
/// header.
#[must_use]
pub fn render<R: AsRef<[String]>>(header: &[&str], body: &[R]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for line in body {
        let line = line.as_ref();
        assert_eq!(line.len(), header.len(), "a row as wide as the header");
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push = |cells: &mut dyn Iterator<Item = &str>| {
        let line: Vec<String> = cells.zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    };
    push(&mut header.iter().copied());
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    push(&mut rule.iter().map(String::as_str));
    for line in body {
        push(&mut line.as_ref().iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_under_their_headers() {
        let text = render(&["op", "p99"], &[vec!["get".to_owned(), "1.2us".to_owned()]]);
        assert_eq!(text, "op   p99\n---  -----\nget  1.2us\n");
    }
}
