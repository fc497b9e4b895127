"""Linux's KPTI rule lives in linux/ and reaches the backends only through the Target."""

from __future__ import annotations

from xenhpt.linux.banner import Banner
from xenhpt.linux.kernel import Kernel, KernelLayout
from xenhpt.linux.kpti import kernel_dtb

from .test_current_task import INIT_TASK, SyntheticTarget, _profile


def test_kpti_user_pgd_maps_to_its_kernel_twin() -> None:
    assert kernel_dtb(0x1234_3000 | 0x801) == 0x1234_2000
    assert kernel_dtb(0x1234_2000) == 0x1234_2000


def test_opening_a_kernel_hands_the_target_its_paging_mode_and_the_kpti_rule() -> None:
    target = SyntheticTarget()
    layout = KernelLayout(slide=0, dtb=0x1000, banner=Banner("Linux version 3.2.0", "3.2.0", 0),
                          levels=5)
    Kernel(target, _profile({"init_task": INIT_TASK}), layout)
    assert target.kernel_paging == (5, kernel_dtb)
