"""Regenerate polyv_connector/data/sample_viewers.parquet, the demo's bundled input.

200 viewers x 2 fields, long form, with a few rows a data engineer meets in real tables
(blank id, null value, unknown field, an identical duplicate) so the demo's report shows
more than one status. Deterministic: same file on every run.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

OUT = Path(__file__).resolve().parent.parent / "polyv_connector" / "data" / "sample_viewers.parquet"


def main() -> None:
    viewers, fields, values = [], [], []
    tiers = ["普通会员", "黄金会员", "钻石会员"]
    for i in range(200):
        viewers += [f"viewer-{i:04d}"] * 2
        fields += ["PAY_STATUS", "VIP_LEVEL"]
        values += ["已支付" if i % 3 else "未支付", tiers[i % 3]]
    viewers += ["   ", "viewer-0001", "viewer-0002", "viewer-0004"]
    fields += ["PAY_STATUS", "NO_SUCH_FIELD", "COURSE_PROGRESS", "PAY_STATUS"]
    values += ["已支付", "x", None, "已支付"]
    table = pa.table({"viewerId": viewers, "customFieldId": fields, "customFieldValue": values})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, OUT)
    print(f"wrote {OUT} ({table.num_rows} rows)")


if __name__ == "__main__":
    main()
