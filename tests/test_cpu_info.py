"""The CPU facts printed beside every INT8/FP32 speed figure, read from /proc/cpuinfo text."""

from __future__ import annotations

from edge_agent.cpu_info import cpu_facts, cpu_name, int8_dot_product

EPYC = ["processor\t: 0", "model name\t: AMD EPYC 9B14", "flags\t\t: fpu sse avx2 avx512f avx512_vnni"]
AVX2_ONLY = ["model name\t: Intel(R) Xeon(R) CPU E5-2690 v4", "flags\t\t: fpu sse avx avx2 fma"]
PI5 = [
    "processor\t: 0",
    "Features\t: fp asimd evtstrm aes crc32 atomics fphp asimdhp asimdrdm asimddp",
    "Model\t: Raspberry Pi 5",
]
PI4 = ["Features\t: fp asimd evtstrm crc32 cpuid", "Model\t\t: Raspberry Pi 4 Model B Rev 1.5"]


def test_the_int8_dot_product_extension_is_named_or_none() -> None:
    assert int8_dot_product(EPYC) == "avx512_vnni"
    assert int8_dot_product(AVX2_ONLY) is None
    assert int8_dot_product(PI5) == "asimddp"
    assert int8_dot_product(PI4) is None
    assert int8_dot_product([]) is None


def test_the_cpu_name_comes_from_x86_or_arm_lines() -> None:
    assert cpu_name(EPYC) == "AMD EPYC 9B14"
    assert cpu_name(PI4) == "Raspberry Pi 4 Model B Rev 1.5"
    facts = cpu_facts()  # this machine: a name, and a flag from the known list or None
    assert facts["cpu"] and facts["int8_dot_product"] in (
        None,
        "amx_int8",
        "avx512_vnni",
        "avx_vnni",
        "asimddp",
    )
