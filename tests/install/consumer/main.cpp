// SPDX-License-Identifier: Apache-2.0
#include <tstitch/tstitch.hpp>

#if defined(TSTITCH_VERSION_MAJOR)
static_assert(TSTITCH_VERSION_MAJOR == 0, "the installed tstitch is expected to be 0.x");
#endif

int main() { return 0; }
