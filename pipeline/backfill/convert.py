"""File format conversion through the embedded ClickHouse engine, in a process of its own.

chdb opens one database per process: a command that already reads the pipeline's database (or
a test process holding one) cannot open a second, in-memory one to read a CSV file. So every
conversion runs here, as `python -m pipeline.backfill.convert`, which the caller waits for.
Rows keep their order (one thread, Parquet's order preserved): row numbers, and the ids made
from them, are the same on every run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from clickhouse_connect.driver.binding import format_str

# CSV and TSV columns read as text: the row mapping decides what each field is, and an id of
# "007" stays "007" (type inference would make it 7)
_READ_SETTINGS = ("max_threads = 1, input_format_parquet_preserve_order = 1, "
                  "input_format_csv_use_best_effort_in_schema_inference = 0, "
                  "input_format_tsv_use_best_effort_in_schema_inference = 0, "
                  "date_time_input_format = 'best_effort'")  # times as any reader writes them


class ConversionFailed(Exception):
    pass



def conversion_sql(src: Path, src_format: str, dst: Path, dst_format: str,
                   structure: str | None = None) -> str:
    table = f"file({format_str(str(src))}, {src_format}"
    table += f", {format_str(structure)})" if structure else ")"
    return (f"SELECT * FROM {table} INTO OUTFILE {format_str(str(dst))} TRUNCATE FORMAT {dst_format} "
            f"SETTINGS {_READ_SETTINGS}")


def convert(src: Path, src_format: str, dst: Path, dst_format: str,
            structure: str | None = None, timeout_s: float = 3600.0) -> None:
    """Rewrite `src` as `dst` in another format; ConversionFailed with ClickHouse's reason."""
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.backfill.convert", str(src), src_format, str(dst),
         dst_format, structure or ""],
        capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no output"
        raise ConversionFailed(f"cannot read {src.name} as {src_format}: {reason}")


def main(argv: list[str]) -> int:
    import chdb

    src, src_format, dst, dst_format, structure = argv
    try:
        chdb.query(conversion_sql(Path(src), src_format, Path(dst), dst_format, structure or None))
    except Exception as exc:  # chdb raises its own types; the caller reports the message
        print(str(exc).strip().replace("\n", " ")[:2000], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
