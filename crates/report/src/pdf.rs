//! Vector PDF copies of the SVG figures (`retbench report --pdf`), for a
//! paper: svg2pdf converts each SVG with the bundled font (DejaVu Sans,
//! the figures' only font) embedded as a subset, so text stays text —
//! selectable and searchable — and no system tool or font is involved.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use retbench_core::fsutil::FileError;

use crate::{ReportError, write_atomic};

/// usvg's options with the bundled font as every family the figures name.
pub(crate) fn options() -> &'static svg2pdf::usvg::Options<'static> {
    static OPTIONS: OnceLock<svg2pdf::usvg::Options<'static>> = OnceLock::new();
    OPTIONS.get_or_init(|| {
        let mut o = svg2pdf::usvg::Options::default();
        let db = o.fontdb_mut();
        db.load_font_data(include_bytes!("../assets/DejaVuSans.ttf").to_vec());
        db.set_sans_serif_family("DejaVu Sans");
        o.font_family = "DejaVu Sans".into();
        o
    })
}

/// Writes `<svg stem>.pdf` beside `svg`; returns its path.
pub fn svg_to_pdf(svg: &Path) -> Result<PathBuf, ReportError> {
    let bad = |message: String| ReportError::Plot {
        name: svg.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(svg).map_err(|source| FileError::Io {
        path: svg.to_path_buf(),
        source,
    })?;
    let tree = svg2pdf::usvg::Tree::from_str(&text, options())
        .map_err(|e| bad(format!("SVG not understood: {e}")))?;
    let pdf = svg2pdf::to_pdf(
        &tree,
        svg2pdf::ConversionOptions::default(),
        svg2pdf::PageOptions::default(),
    )
    .map_err(|e| bad(format!("PDF conversion failed: {e}")))?;
    let out = svg.with_extension("pdf");
    write_atomic(&out, &pdf)?;
    Ok(out)
}
