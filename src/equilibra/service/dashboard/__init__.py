"""The dashboard at `/`: pages rendered on the server, charts as inline SVG (no JavaScript)."""
