"""Writers: the build folder (``save_to_disk`` layout + manifest.json), written atomically."""
from .arrow import FEATURES, SpillWriter, output_schema, write_dataset_dict, write_split
from .atomic import staged_output

__all__ = ["FEATURES", "SpillWriter", "output_schema", "write_dataset_dict", "write_split", "staged_output"]
