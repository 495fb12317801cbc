"""Reading runs back: statistics over seeds, comparisons, plots, tables, the report, evaluate and reconstruct."""
