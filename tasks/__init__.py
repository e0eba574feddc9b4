"""lmms-eval task YAMLs of lmms-ac, installed as ``lmms_ac.tasks``. The plugin hook (``lmms_ac.plugin``,
wired by ``lmms_ac.entry_point``) makes every TaskManager index this folder, plus the robustness variants
generated from the catalogue (``lmms_ac.robustness.index``)."""
