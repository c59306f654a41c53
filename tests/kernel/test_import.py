import subprocess
import sys


def test_kernel_imports_without_torch() -> None:
    code = (
        "import sys, md_framework, md_framework.config, md_framework.plugins, "
        "md_framework.drivers, md_framework.cli, md_framework.inventory, md_framework.stats_api, "
        "md_framework.tracing_api, md_framework.runtime;"
        "heavy = [m for m in ('torch', 'transformers', 'circuit_tracer', 'sae_lens') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_plugins_list_does_not_import_torch() -> None:
    code = (
        "import sys; from md_framework.plugins import get_plugin_manager;"
        "from md_framework.inventory import plugin_inventory;"
        "plugin_inventory(get_plugin_manager(autoload=False));"
        "assert 'torch' not in sys.modules, 'listing plugins imported torch'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
