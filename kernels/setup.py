# The extension module: setuptools' pyproject.toml table for it is still experimental.
from setuptools import Extension, setup

# -O3: the loops vectorize; no -march: the module runs on any node of the architecture.
setup(ext_modules=[Extension("footfall_kernels", sources=["footfall_kernels.c"], extra_compile_args=["-O3"])])
