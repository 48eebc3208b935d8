"""download (layouts): copy a multi-channel dataset into data/raw/, keeping its relative paths.

``data.layout.root`` is a folder or ``s3://bucket/prefix``; the metadata file comes along, and
meta.csv holds it in the normalised form of bps/data/layouts/meta.py (one row per sample, one
``file_<channel>`` column per channel). Files the selection no longer names are removed.
"""

from bps.core.files import prune, remove_partials, write_text
from bps.core.params import Params
from bps.core.paths import META, RAW
from bps.core.stage import LAYOUT_SOURCES, run_stage
from bps.data.layouts.meta import files_of
from bps.data.layouts.source import download_layout
from bps.data.s3 import MANIFEST


def main(params: Params) -> None:
    layout = params.data.layout
    RAW.mkdir(parents=True, exist_ok=True)
    remove_partials(RAW)
    table = download_layout(RAW, params.data)
    write_text(META, table.to_csv(index=False))
    removed = prune(RAW, [*files_of(table), layout.metadata, META.name, MANIFEST])
    print(f"download: {len(table)} samples of {len(layout.channels)} channels in {RAW}/ "
          f"({removed} stale files removed)")


if __name__ == "__main__":
    run_stage(main, LAYOUT_SOURCES)
