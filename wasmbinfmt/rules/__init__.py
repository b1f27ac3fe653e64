"""Rules: the model (model.py), the formats rules are written in (loaders.py: binfmt_misc
lines, binfmt.d, binfmt-support, /proc entries; rules_yaml.py), and where a run's rules
come from and in what order (sources.py). Pure but for reading files."""
