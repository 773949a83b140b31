"""dvc.yaml declares exactly the code each stage imports, and every param it reads."""
import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LOCAL_PACKAGES = ("fashion_vae", "stages")


def local_imports(module_file: Path) -> set[Path]:
    """Repository files imported (transitively) by ``module_file``, packages' __init__ included."""
    seen: set[Path] = set()
    todo = [module_file]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        package_init = path.parent / "__init__.py"
        if package_init.exists():
            todo.append(package_init)
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            for name in names:
                if name.split(".")[0] in LOCAL_PACKAGES:
                    candidate = ROOT / (name.replace(".", "/") + ".py")
                    if candidate.exists():
                        todo.append(candidate)
    return {p.relative_to(ROOT) for p in seen}


def test_every_imported_module_is_a_dependency():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        module = stage["cmd"].split("-m ")[1].split()[0]
        imported = local_imports(ROOT / (module.replace(".", "/") + ".py"))
        declared = {Path(d) for d in stage["deps"] if d.endswith(".py")}
        assert declared == imported, f"stage {name}: missing {imported - declared}, extra {declared - imported}"


def test_stage_param_sections_exist():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for ref in stage.get("params", []):
            section, _, key = ref.partition(".")
            assert section in params and (not key or key in params[section]), f"{name}: {ref}"
