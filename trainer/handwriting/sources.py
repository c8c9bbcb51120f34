"""Where the handwriting set comes from, pinned, with each source's licence; what it must never use.

OFF_LIMITS are sources that checks this project does not see are made from: no generator may read them,
and a test holds SOURCES to that. DEV sources are kept out of training, as this project's own dev set.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    name: str  # "fontsource:caveat", "ems:EMSAllure", "debian:fonts-klee", "drawn:flagged-1"
    package: str  # what is fetched: an npm or Debian package with its version ("" for drawn styles)
    licence: str

    @property
    def kind(self) -> str:
        return self.name.split(":", 1)[0]


FONTSOURCE_VERSION = "5.3.0"
FONTSOURCE = {  # family -> licence (the package's own `license` field)
    "caveat": "OFL-1.1",
    "indie-flower": "OFL-1.1",
    "kalam": "OFL-1.1",
    "patrick-hand": "OFL-1.1",
    "shadows-into-light": "OFL-1.1",
    "gochi-hand": "OFL-1.1",
    "reenie-beanie": "OFL-1.1",
    "homemade-apple": "Apache-2.0",
    "architects-daughter": "OFL-1.1",
    "nanum-pen-script": "OFL-1.1",
    "gaegu": "OFL-1.1",
    "handlee": "OFL-1.1",
    "schoolbell": "Apache-2.0",
    "sue-ellen-francisco": "OFL-1.1",
    "the-girl-next-door": "OFL-1.1",
    "nothing-you-could-do": "OFL-1.1",
    "covered-by-your-grace": "OFL-1.1",
    "just-another-hand": "Apache-2.0",
    "coming-soon": "Apache-2.0",
    "waiting-for-the-sunrise": "OFL-1.1",
    "zeyada": "OFL-1.1",
    "la-belle-aurore": "OFL-1.1",
    "over-the-rainbow": "OFL-1.1",
    "dawning-of-a-new-day": "OFL-1.1",
    "loved-by-the-king": "OFL-1.1",
    "annie-use-your-telescope": "OFL-1.1",
    "give-you-glory": "OFL-1.1",
    "cedarville-cursive": "OFL-1.1",
    "short-stack": "OFL-1.1",
    "just-me-again-down-here": "OFL-1.1",
    "crafty-girls": "Apache-2.0",
    "neucha": "OFL-1.1",
    "pangolin": "OFL-1.1",
    "gloria-hallelujah": "OFL-1.1",
    "swanky-and-moo-moo": "OFL-1.1",
    "walter-turncoat": "Apache-2.0",
    "mynerve": "OFL-1.1",
}
# The single-stroke EMS fonts that npm's hersheytext (MIT) carries as SVG fonts, each OFL by its metadata.
# The package's Hershey fonts beside them are off limits, and never read.
HERSHEYTEXT = "hersheytext@2.0.0"
EMS = ("EMSAllure", "EMSElfin", "EMSFelix", "EMSNixish", "EMSReadability", "EMSTech")
DEBIAN = {  # package -> version, unpacked with dpkg-deb -x (never installed: bench/uploads.py renders those)
    "fonts-bwht": "0.1-3",
    "fonts-tlwg-purisa-otf": "1:0.7.3-1",
    "fonts-klee": "1.000-20210121-2",
    "fonts-kiloji": "1:2.1.0-25",
    "fonts-yusei-magic": "1.000-20210130-2",
    "fonts-humor-sans": "1.0-4",
}
DEBIAN_LICENCE = "as its /usr/share/doc/<package>/copyright says (recorded in LICENSES.md)"
# Styles fonts lack, drawn as pen strokes (trainer/handwriting/drawn.py); this project's own.
DRAWN = (
    "flagged-1",
    "flagged-footed-1",
    "crossed-7",
    "flat-top-9",
    "hooked-9",
    "open-4",
    "plain-1",
    "plain-7",
    "plain-4",
    "plain-3",
)
DEV = {"fontsource:kalam", "fontsource:handlee", "ems:EMSFelix", "debian:fonts-yusei-magic"}

SOURCES = (
    *(
        Source(f"fontsource:{family}", f"@fontsource/{family}@{FONTSOURCE_VERSION}", licence)
        for family, licence in FONTSOURCE.items()
    ),
    *(Source(f"ems:{font}", HERSHEYTEXT, "OFL-1.1 (font), MIT (package)") for font in EMS),
    *(Source(f"debian:{name}", f"{name}={version}", DEBIAN_LICENCE) for name, version in DEBIAN.items()),
    *(Source(f"drawn:{style}", "", "this project's own") for style in DRAWN),
)


def is_dev(source: Source) -> bool:
    return source.name in DEV


# Never to be read by anything that builds training data (held-out checks use them). hersheytext is
# fetched for its EMS fonts alone: fetch.py reads only svg_fonts/EMS*.svg from it.
OFF_LIMITS = (
    "sklearn",
    "load_digits",
    "uci",
    "dejavu",
    "hershey",  # the Hershey fonts, hersheytext's included; its EMS fonts are matched as ems:EMS...
    "fonts-dkg-handwriting",
    "fonts-breip",
    "fonts-dancingscript",
    "fonts-kaushanscript",
    "fonts-kristi",
    "fonts-rufscript",
    "fonts-comic-neue",
    "fonts-femkeklaver",
    "fonts-sjfonts",
    "fonts-seto",
    "fonts-yozvox",
    "fonts-navilu",
    "dancing-script",
    "kaushan-script",
    "comic-neue",
)
