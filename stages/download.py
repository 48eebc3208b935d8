"""download: fill data/raw/ with BPS images and their meta.csv, from the simulator or from S3.

``data.source: synthetic`` (default) renders the offline simulator; ``s3`` reads the public
NASA bucket (or ``data.s3.endpoint_url``). Either way data/raw/ ends up holding exactly the
selected images plus a meta.csv describing them (and, from S3, the .manifest.json that records
each object's ETag). A selection of no images is refused before anything is removed.
"""

from bps.core.files import prune, remove_partials, write_text
from bps.core.params import Params
from bps.core.paths import META, RAW
from bps.core.stage import BPS_SOURCES, run_stage
from bps.data.meta import select_rows
from bps.data.s3 import MANIFEST, download_dataset
from bps.sim.render import plan_dataset, write_images


def main(params: Params) -> None:
    data = params.data
    RAW.mkdir(parents=True, exist_ok=True)
    remove_partials(RAW)
    if data.source == "synthetic":
        synthetic = data.synthetic
        planned = plan_dataset(synthetic.images_per_condition, data.hours, synthetic.seed)
        table = select_rows(planned, data.hours, data.max_per_condition, data.sample_seed)
        write_images(RAW, table, synthetic.seed, confounds=synthetic)
    else:
        table = download_dataset(RAW, data)
    write_text(META, table.to_csv(index=False))
    removed = prune(RAW, [*table["filename"], META.name, MANIFEST])
    print(f"download: {len(table)} images in {RAW}/ ({removed} stale files removed)")


if __name__ == "__main__":
    run_stage(main, BPS_SOURCES)
