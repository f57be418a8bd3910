/*
 * Unit tests of util/buf.c: the growable buffer with a hard cap that every
 * module uses for HTTP bodies and vCards.
 */
#include "util.h"

#include <errno.h>
#include <stdint.h>

#include "check.h"

TEST(buf_starts_empty_with_no_memory)
{
	struct buf b;

	buf_init(&b, 0);
	CHECK_STR(b.data, ""); /* a valid empty string, not NULL */
	CHECK_INT(b.len, 0);
	CHECK_INT(b.size, 0);
	CHECK_INT(b.cap, BUF_DEFAULT_CAP);
out:
	buf_release(&b);
}

TEST(buf_keeps_an_explicit_cap)
{
	struct buf b;

	buf_init(&b, 10);
	CHECK_INT(b.cap, 10);
out:
	buf_release(&b);
}

TEST(buf_appends_bytes_and_stays_nul_terminated)
{
	struct buf b;

	buf_init(&b, 0);
	CHECK_INT(buf_add(&b, "abc", 3), 0);
	CHECK_INT(b.len, 3);
	CHECK(b.data[3] == '\0');
	CHECK_STR(b.data, "abc");
	CHECK_INT(buf_addstr(&b, "def"), 0);
	CHECK_INT(buf_addch(&b, 'g'), 0);
	CHECK_INT(b.len, 7);
	CHECK_STR(b.data, "abcdefg");
	CHECK(b.data[b.len] == '\0');
out:
	buf_release(&b);
}

TEST(buf_empty_append_terminates_the_data)
{
	struct buf b;

	buf_init(&b, 0);
	CHECK_INT(buf_add(&b, "", 0), 0);
	CHECK(b.data != NULL);
	CHECK_INT(b.len, 0);
	CHECK_STR(b.data, "");
out:
	buf_release(&b);
}

TEST(buf_holds_nul_bytes_in_the_middle)
{
	static const char bin[] = {'a', '\0', 'b', '\0', 'c'};
	struct buf b;

	buf_init(&b, 0);
	CHECK_INT(buf_add(&b, bin, sizeof(bin)), 0);
	CHECK_INT(b.len, 5);
	CHECK(memcmp(b.data, bin, sizeof(bin)) == 0);
	CHECK(b.data[5] == '\0');
out:
	buf_release(&b);
}

TEST(buf_grows_across_many_appends_and_keeps_content)
{
	struct buf b;
	size_t i;

	buf_init(&b, 0);
	for (i = 0; i < 100000; i++)
		CHECK_INT(buf_addch(&b, (char)('a' + i % 26)), 0);
	CHECK_INT(b.len, 100000);
	CHECK(b.size > b.len);
	for (i = 0; i < 100000; i++)
		CHECK(b.data[i] == (char)('a' + i % 26));
	CHECK(b.data[b.len] == '\0');
out:
	buf_release(&b);
}

TEST(buf_grows_for_one_large_append)
{
	struct buf b;
	char *big = malloc(1 << 20);
	int r;

	buf_init(&b, 0);
	CHECK(big != NULL);
	memset(big, 'x', 1 << 20);
	CHECK_INT(buf_addch(&b, 'y'), 0);
	r = buf_add(&b, big, 1 << 20);
	free(big);
	CHECK_INT(r, 0);
	CHECK_INT(b.len, (1 << 20) + 1);
	CHECK(b.data[0] == 'y');
	CHECK(b.data[1] == 'x' && b.data[1 << 20] == 'x');
	CHECK(b.data[b.len] == '\0');
out:
	buf_release(&b);
}

TEST(buf_accepts_append_up_to_exactly_the_cap)
{
	struct buf b;

	buf_init(&b, 8);
	CHECK_INT(buf_add(&b, "12345678", 8), 0);
	CHECK_INT(b.len, 8);
	CHECK_STR(b.data, "12345678");
out:
	buf_release(&b);
}

TEST(buf_refuses_append_past_cap)
{
	struct buf b;

	buf_init(&b, 8);
	CHECK_INT(buf_add(&b, "123456789", 9), -E2BIG);
	CHECK_INT(b.len, 0);
out:
	buf_release(&b);
}

TEST(buf_refused_append_leaves_buffer_unchanged)
{
	struct buf b;
	char *data_before;
	size_t size_before;

	buf_init(&b, 8);
	CHECK_INT(buf_addstr(&b, "hello"), 0);
	data_before = b.data;
	size_before = b.size;
	CHECK_INT(buf_addstr(&b, "abcd"), -E2BIG);
	/* Nothing moved: same memory, same size, same content. */
	CHECK(b.data == data_before);
	CHECK_INT(b.size, size_before);
	CHECK_INT(b.len, 5);
	CHECK_STR(b.data, "hello");
	/* A smaller append that fits still works afterwards. */
	CHECK_INT(buf_addch(&b, 'x'), 0);
	CHECK_INT(buf_add(&b, "yzw", 3), -E2BIG);
	CHECK_INT(b.len, 6);
	CHECK_STR(b.data, "hellox");
out:
	buf_release(&b);
}

TEST(buf_refuses_a_size_that_would_overflow)
{
	struct buf b;

	buf_init(&b, 16);
	CHECK_INT(buf_addstr(&b, "abc"), 0);
	/* n close to SIZE_MAX: len + n would wrap around; must be refused, not
	 * read. */
	CHECK_INT(buf_add(&b, "x", SIZE_MAX), -E2BIG);
	CHECK_INT(buf_add(&b, "x", SIZE_MAX - 1), -E2BIG);
	CHECK_INT(b.len, 3);
	CHECK_STR(b.data, "abc");
out:
	buf_release(&b);
}

TEST(buf_refuses_printf_past_cap_and_stays_unchanged)
{
	struct buf b;

	buf_init(&b, 10);
	CHECK_INT(buf_printf(&b, "%d-%s", 42, "ab"), 0);
	CHECK_STR(b.data, "42-ab");
	CHECK_INT(buf_printf(&b, "%s", "toolong"), -E2BIG);
	CHECK_INT(b.len, 5);
	CHECK_STR(b.data, "42-ab");
	CHECK_INT(buf_printf(&b, "%05d", 7), 0); /* exactly reaches the cap */
	CHECK_INT(b.len, 10);
	CHECK_STR(b.data, "42-ab00007");
out:
	buf_release(&b);
}

TEST(buf_printf_appends_formatted_text)
{
	struct buf b;

	buf_init(&b, 0);
	CHECK_INT(buf_addstr(&b, "x="), 0);
	CHECK_INT(buf_printf(&b, "%d, s=%s, c=%c, u=%zu", -5, "str", 'q', (size_t)99), 0);
	CHECK_STR(b.data, "x=-5, s=str, c=q, u=99");
	CHECK_INT(b.len, strlen("x=-5, s=str, c=q, u=99"));
out:
	buf_release(&b);
}

TEST(buf_printf_grows_for_long_output)
{
	struct buf b;
	size_t i;

	buf_init(&b, 0);
	for (i = 0; i < 1000; i++)
		CHECK_INT(buf_printf(&b, "%04zu;", i), 0);
	CHECK_INT(b.len, 5000);
	CHECK(memcmp(b.data, "0000;0001;", 10) == 0);
	CHECK(memcmp(b.data + 4995, "0999;", 5) == 0);
	CHECK(b.data[b.len] == '\0');
out:
	buf_release(&b);
}

TEST(buf_printf_of_empty_string_on_empty_buffer_terminates)
{
	struct buf b;

	buf_init(&b, 0);
	CHECK_INT(buf_printf(&b, "%s", ""), 0);
	CHECK(b.data != NULL);
	CHECK_INT(b.len, 0);
	CHECK_STR(b.data, "");
out:
	buf_release(&b);
}

TEST(buf_reset_forgets_content_but_keeps_memory)
{
	struct buf b;
	char *data;
	size_t size;

	buf_init(&b, 0);
	CHECK_INT(buf_addstr(&b, "some content"), 0);
	data = b.data;
	size = b.size;
	buf_reset(&b);
	CHECK_INT(b.len, 0);
	CHECK(b.data == data);
	CHECK_INT(b.size, size);
	CHECK_STR(b.data, "");
	CHECK_INT(buf_addstr(&b, "new"), 0);
	CHECK_STR(b.data, "new");
out:
	buf_release(&b);
}

TEST(buf_reset_of_a_never_used_buffer_is_harmless)
{
	struct buf b;

	buf_init(&b, 0);
	buf_reset(&b);
	CHECK_STR(b.data, ""); /* a valid empty string, not NULL */
	CHECK_INT(b.len, 0);
out:
	buf_release(&b);
}

TEST(buf_release_empties_and_allows_reuse)
{
	struct buf b;

	buf_init(&b, 32);
	CHECK_INT(buf_addstr(&b, "first"), 0);
	buf_release(&b);
	CHECK_STR(b.data, ""); /* a valid empty string, not NULL */
	CHECK_INT(b.len, 0);
	CHECK_INT(b.size, 0);
	CHECK_INT(b.cap, 32); /* the cap survives release */
	CHECK_INT(buf_addstr(&b, "second"), 0);
	CHECK_STR(b.data, "second");
out:
	buf_release(&b);
}

TEST(buf_detach_hands_over_content_and_empties_buffer)
{
	struct buf b;
	char *p;
	size_t len = 12345;

	buf_init(&b, 0);
	CHECK_INT(buf_addstr(&b, "detached"), 0);
	p = buf_detach(&b, &len);
	CHECK(p != NULL);
	CHECK_INT(len, 8);
	CHECK_STR(p, "detached");
	CHECK_STR(b.data, ""); /* a valid empty string, not NULL */
	CHECK_INT(b.len, 0);
	CHECK_INT(b.size, 0);
	free(p);
	/* The buffer is usable again after the hand-over. */
	CHECK_INT(buf_addstr(&b, "again"), 0);
	CHECK_STR(b.data, "again");
out:
	buf_release(&b);
}

TEST(buf_detach_of_a_never_used_buffer_gives_empty_string)
{
	struct buf b;
	char *p = NULL;
	size_t len = 99;

	buf_init(&b, 0);
	p = buf_detach(&b, &len);
	CHECK(p != NULL);
	CHECK_INT(len, 0);
	CHECK_STR(p, "");
out:
	free(p);
	buf_release(&b);
}

TEST(buf_detach_accepts_null_length)
{
	struct buf b;
	char *p = NULL;

	buf_init(&b, 0);
	CHECK_INT(buf_addstr(&b, "x"), 0);
	p = buf_detach(&b, NULL);
	CHECK_STR(p, "x");
out:
	free(p);
	buf_release(&b);
}
