"""seqio registrations for atlas_t5x; importing this package registers them.

The folder is the repository's `tasks/`; it installs and imports as `atlas_t5x_tasks` (setup.py
`package_dir`), e.g. `import atlas_t5x_tasks` or `--module_import=atlas_t5x_tasks` for seqio's
`cache_tasks_main`. Imports inside it are relative, so it has no other name.

* `madlad_{lang}` Tasks (tasks/madlad.py) for every language under the MADLAD root
  (`madlad.resolve_madlad_dir`: gin binding > $MADLAD_DIR > the embedded corpus);
  `register_madlad_task(lang, root)` adds any other MADLAD-400 code on demand.
* Mixtures over those Tasks (tasks/mixtures.py).
"""

from .madlad import TASK_PREFIX, register_madlad_task, register_madlad_tasks, task_name

MADLAD_TASKS: list[str] = register_madlad_tasks()

from . import mixtures  # noqa: E402,F401  pylint: disable=unused-import,wrong-import-position

__all__ = ["MADLAD_TASKS", "TASK_PREFIX", "register_madlad_task", "register_madlad_tasks", "task_name"]
