"""PRN model: frozen multi-scale encoder, prototypes, residuals, multi-size attention, fusion, decoder."""
