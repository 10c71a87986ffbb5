"""Reports from run folders: paper-style tables (CSV, LaTeX, Markdown), figures (PNG, PDF) and an index.md."""
from .build import write_report
from .figures import filter_class_heatmap, select_shared_filters
from .paper import load_paper_results, paper_comparison
from .tables import Table, cost_table, metrics_summary, table1, table2

__all__ = ["write_report", "filter_class_heatmap", "select_shared_filters", "load_paper_results",
           "paper_comparison", "Table", "cost_table", "metrics_summary", "table1", "table2"]
