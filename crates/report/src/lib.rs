//! retbench-report: aggregation over seeds, figures, Markdown/LaTeX/HTML
//! reports and regression comparison. Not built yet: it arrives with the
//! harness issue.
