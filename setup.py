"""Builds sgpo_engine._C: the CPU kernels always, the CUDA kernels when torch
has CUDA and a GPU is visible, or when SGPO_FORCE_CUDA=1 (for building on a
machine without a GPU; archs from TORCH_CUDA_ARCH_LIST, default 8.0;9.0).
SGPO_FORCE_CUDA=0 forces a CPU-only build. CUDA_HOME alone never turns the
CUDA build on: nvcc may be installed on machines whose torch has no CUDA.

torch must be importable at build time: `pip install --no-build-isolation -e .`
"""
import glob
import os

from setuptools import setup

try:
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
except ImportError as e:  # pragma: no cover - explained to the user, not tested
    raise SystemExit(
        "sgpo-engine builds a PyTorch extension, so torch must be installed first and the\n"
        "build must see it: pip install torch && pip install --no-build-isolation -e .\n"
        f"({e})")


def build_cuda() -> bool:
    force = os.environ.get("SGPO_FORCE_CUDA")
    if force is not None:
        return force == "1"
    return torch.version.cuda is not None and torch.cuda.is_available()


def extension():
    here = os.path.dirname(os.path.abspath(__file__))
    rel = lambda pattern: sorted(os.path.relpath(p, here) for p in glob.glob(os.path.join(here, pattern)))
    sources = rel("csrc/*.cpp") + rel("csrc/cpu/*.cpp")
    cxx = ["-O3", "-std=c++17", "-fno-math-errno", "-Wno-psabi", "-Wno-c++20-extensions"]  # -g off: it triples build time
    if not build_cuda():
        return CppExtension("sgpo_engine._C", sources, extra_compile_args={"cxx": cxx})
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    sources += rel("csrc/cuda/*.cu") + rel("csrc/cuda/*.cpp")
    nvcc = ["-O3", "-std=c++17", "-lineinfo", "--expt-relaxed-constexpr"]
    return CUDAExtension("sgpo_engine._C", sources, extra_compile_args={"cxx": cxx, "nvcc": nvcc},
                         define_macros=[("SGPO_WITH_CUDA", "1")])


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
