//! Plain-text tables for stdout: left-aligned columns, a dashed rule under
//! the header.

/// Left-aligned columns separated by two spaces.
#[must_use]
pub fn render_table<const N: usize>(header: &[&str; N], body: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for line in body {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push = |cells: Vec<&str>| {
        let line: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    };
    push(header.to_vec());
    push(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    );
    for line in body {
        push(line.iter().map(String::as_str).collect());
    }
    out
}
