/*
 * The apply hook against real child processes: small shell scripts written
 * into a private directory. Success with the input on stdin, failure with
 * the tail of stderr as the reason, timeout with the process group killed,
 * a hook that does not exist or cannot be executed, a hook that ignores its
 * input, and the signal mask the child starts with.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "tb/alloc.h"
#include "tb/clock.h"
#include "tb/mutator.h"

static char dir[256];

static int setup(void **state)
{
    (void)state;
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/tb-hook-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Writes an executable script (mode) named name and returns its path (static buffer). */
static const char *script(const char *name, const char *body, mode_t mode)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "#!/bin/sh\n%s\n", body);
    fclose(f);
    chmod(path, mode);
    return path;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = tb_xcalloc(1, 1 << 16);
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void test_hook_success_gets_input_on_stdin(void **state)
{
    (void)state;
    char body[600];
    snprintf(body, sizeof body, "cat > '%s/stdin.json'\necho noise on stdout", dir);
    const char *path = script("ok.sh", body, 0755);
    char reason[TB_MUTATOR_REASON_BUF_SIZE];
    const char *input = "{\"id\":\"m_1\",\"op\":\"add_node\"}";
    assert_int_equal(tb_mutator_hook_run(path, NULL, input, strlen(input), 5000, reason), TB_OK);
    char got_path[512];
    snprintf(got_path, sizeof got_path, "%s/stdin.json", dir);
    char *got = slurp(got_path);
    assert_non_null(got);
    assert_string_equal(got, input);
    free(got);
}

static void test_hook_failure_reason_is_stderr_tail(void **state)
{
    (void)state;
    const char *path = script("fail.sh",
                              "echo 'first words' >&2\n"
                              "i=0; while [ $i -lt 100 ]; do printf 'xxxxxxxxxx' >&2; i=$((i+1)); done\n"
                              "echo >&2; echo 'quota exceeded on switch-7' >&2\nexit 3",
                              0755);
    char reason[TB_MUTATOR_REASON_BUF_SIZE];
    assert_int_equal(tb_mutator_hook_run(path, NULL, "{}", 2, 5000, reason), TB_EIO);
    assert_true(strlen(reason) <= TB_MUTATOR_HOOK_STDERR_MAX);
    assert_null(strstr(reason, "first words")); /* beyond the last 512 bytes */
    size_t len = strlen(reason);
    const char *tail = "quota exceeded on switch-7";
    assert_true(len >= strlen(tail));
    assert_string_equal(reason + len - strlen(tail), tail);
}

static void test_hook_failure_without_stderr_names_the_status(void **state)
{
    (void)state;
    const char *path = script("quiet.sh", "exit 4", 0755);
    char reason[TB_MUTATOR_REASON_BUF_SIZE];
    assert_int_equal(tb_mutator_hook_run(path, NULL, "{}", 2, 5000, reason), TB_EIO);
    assert_string_equal(reason, "apply hook exited with status 4");
}

static void test_hook_reason_is_cleaned_to_utf8_text(void **state)
{
    (void)state;
    const char *path = script("binary.sh", "printf '\\377\\001bad\\tthing\\n\\342\\202' >&2\nexit 1",
                              0755);
    char reason[TB_MUTATOR_REASON_BUF_SIZE];
    assert_int_equal(tb_mutator_hook_run(path, NULL, "{}", 2, 5000, reason), TB_EIO);
    assert_string_equal(reason, "? bad thing ??");
}

static bool alive(pid_t pid)
{
    return kill(pid, 0) == 0 || errno != ESRCH;
}

static void test_hook_timeout_kills_the_process_group(void **state)
{
    (void)state;
    char body[600];
    snprintf(body, sizeof body, "sleep 30 &\necho $! > '%s/child.pid'\nwait", dir);
    const char *path = script("slow.sh", body, 0755);
    char reason[TB_MUTATOR_REASON_BUF_SIZE];
    int64_t t0 = tb_clock_mono_ms();
    assert_int_equal(tb_mutator_hook_run(path, NULL, "{}", 2, 300, reason), TB_ETIMEDOUT);
    int64_t took = tb_clock_mono_ms() - t0;
    assert_true(took >= 300 && took < 3000);
    assert_non_null(strstr(reason, "timed out after 300 ms"));
    char pid_path[512];
    snprintf(pid_path, sizeof pid_path, "%s/child.pid", dir);
    char *text = slurp(pid_path);
    assert_non_null(text);
    pid_t child = (pid_t)atol(text);
    free(text);
    assert_true(child > 0);
    /* The grandchild was in the hook's group: killed, then reaped by init. */
    for (int i = 0; i < 200 && alive(child); i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    assert_false(alive(child));
}

static void test_hook_missing_or_not_executable_is_a_clear_failure(void **state)
{
    (void)state;
    char reason[TB_MUTATOR_REASON_BUF_SIZE];
    char missing[512];
    snprintf(missing, sizeof missing, "%s/no-such-hook", dir);
    assert_int_equal(tb_mutator_hook_run(missing, NULL, "{}", 2, 5000, reason), TB_ENOTFOUND);
    assert_non_null(strstr(reason, "cannot be run"));
    assert_non_null(strstr(reason, "No such file"));
    const char *plain = script("plain.sh", "exit 0", 0644);
    assert_int_equal(tb_mutator_hook_run(plain, NULL, "{}", 2, 5000, reason), TB_ENOTFOUND);
    assert_non_null(strstr(reason, "Permission denied"));
}

static void test_hook_that_ignores_its_input_still_succeeds(void **state)
{
    (void)state;
    const char *path = script("deaf.sh", "exit 0", 0755);
    size_t len = 4u << 20; /* far more than a pipe holds */
    char *input = tb_xmalloc(len);
    memset(input, ' ', len);
    char reason[TB_MUTATOR_REASON_BUF_SIZE];
    assert_int_equal(tb_mutator_hook_run(path, NULL, input, len, 5000, reason), TB_OK);
    free(input);
}

static void test_hook_starts_with_default_signal_mask(void **state)
{
    (void)state;
    /* Our processes block SIGTERM for sigwait; the hook must not inherit that. */
    sigset_t set, saved;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, &saved);
    const char *path = script("term.sh", "kill -TERM $$\nsleep 5\nexit 0", 0755);
    char reason[TB_MUTATOR_REASON_BUF_SIZE];
    int64_t t0 = tb_clock_mono_ms();
    tb_status st = tb_mutator_hook_run(path, NULL, "{}", 2, 4000, reason);
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    assert_int_equal(st, TB_EIO);
    assert_string_equal(reason, "apply hook was killed by signal 15");
    assert_true(tb_clock_mono_ms() - t0 < 3000);
}

int main(void)
{
    json_set_alloc_funcs(tb_xmalloc, free);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hook_success_gets_input_on_stdin),
        cmocka_unit_test(test_hook_failure_reason_is_stderr_tail),
        cmocka_unit_test(test_hook_failure_without_stderr_names_the_status),
        cmocka_unit_test(test_hook_reason_is_cleaned_to_utf8_text),
        cmocka_unit_test(test_hook_timeout_kills_the_process_group),
        cmocka_unit_test(test_hook_missing_or_not_executable_is_a_clear_failure),
        cmocka_unit_test(test_hook_that_ignores_its_input_still_succeeds),
        cmocka_unit_test(test_hook_starts_with_default_signal_mask),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
