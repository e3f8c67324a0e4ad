"""The names ``backfill emit --ci`` accepts: one per CI system, and the other names people give them.

Apart from the systems' rules (:mod:`backfill.emit.ci_systems`, which checks
that its systems carry exactly these names), so that the command line offers
the choice without loading every system.
"""

from __future__ import annotations

from typing import Final

# In detection order (see ci_systems.SYSTEMS), then the run outside CI.
NAMES: Final = ("github", "gitlab", "circleci", "azure", "bitbucket", "buildkite", "jenkins", "none")
# Other names people give the same systems (the ci-export presets' among them).
ALIASES: Final = {
    "github-actions": "github",
    "gitlab-ci": "gitlab",
    "azure-devops": "azure",
    "azure-pipelines": "azure",
    "bitbucket-pipelines": "bitbucket",
    "local": "none",
}
