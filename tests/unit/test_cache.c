/* cache/: the replica and the sync engine against the emulator. */
#include "check.h"
#include "emulator.h"

#include "cache.h"

TEST(placeholder_is_replaced)
{
	CHECK(1);
}
