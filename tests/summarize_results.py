"""Adds up CTest's and the packaging check's JUnit XML and dotnet's TRX into one line: 'N passed, N failed, N skipped'.

A result file that is missing or unreadable counts as one failure, so a run that silently produced no
results can never look green.
"""
import pathlib
import sys
import xml.etree.ElementTree as ET


def junit_counts(path):
    suite = ET.parse(path).getroot()
    passed = failed = skipped = 0
    for case in suite.iter("testcase"):
        status = case.get("status", "run")
        if case.find("failure") is not None or case.find("error") is not None or status == "fail":
            failed += 1
        elif case.find("skipped") is not None or status in ("notrun", "disabled"):
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped


def trx_counts(path):
    root = ET.parse(path).getroot()
    ns = {"t": root.tag.split("}")[0].strip("{")} if root.tag.startswith("{") else {}
    counters = root.find(".//t:Counters", ns) if ns else root.find(".//Counters")
    get = lambda name: int(counters.get(name, "0"))
    failed = get("failed") + get("error") + get("timeout") + get("aborted")
    # Ignored tests are in `total` but not in `executed`.
    skipped = max(get("notExecuted"), get("total") - get("executed"))
    return get("passed"), failed, skipped


def main(results):
    results = pathlib.Path(results)
    totals = [0, 0, 0]
    for name, reader in (("ctest.xml", junit_counts), ("ctest-linux-arm64.xml", junit_counts), ("ctest-win-x64.xml", junit_counts), ("cli-linux-arm64.xml", junit_counts), ("cli-win-x64.xml", junit_counts), ("dotnet.trx", trx_counts), ("packaging.xml", junit_counts)):
        path = results / name
        try:
            counts = reader(path)
        except (OSError, ET.ParseError, AttributeError) as error:
            print(f"{name}: no readable results ({error})")
            counts = (0, 1, 0)
        print(f"{name}: {counts[0]} passed, {counts[1]} failed, {counts[2]} skipped")
        totals = [t + c for t, c in zip(totals, counts)]
    print(f"{totals[0]} passed, {totals[1]} failed, {totals[2]} skipped")
    return 1 if totals[1] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "build/test-results"))
