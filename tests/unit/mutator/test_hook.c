/*
 * The apply hook against real child processes: small shell scripts written
 * into a private directory. Success with the input on stdin, failure with
 * the tail of stderr as the reason, timeout with the process group killed,
 * a hook that does not exist or cannot be executed, a hook that ignores its
 * input, the signal mask the child starts with, the minimal environment
 * (CONTRACT §6: no secret of ours), and a hook that leaves a child running
 * (`sleep 1000 &`): its whole group is gone once the verdict is taken.
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

/* True once pid is gone (killed, then reaped by init), false after 2 s. */
static bool gone(pid_t pid)
{
    for (int i = 0; i < 200 && alive(pid); i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return !alive(pid);
}

static pid_t read_pid(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *text = slurp(path);
    assert_non_null(text);
    pid_t pid = (pid_t)atol(text);
    free(text);
    assert_true(pid > 0);
    return pid;
}

static void test_hook_environment_is_minimal(void **state)
{
    (void)state;
    /* What a topobus process holds: secrets, settings, and what a hook may have. */
    setenv("TOPOBUS_JWT_SECRET", "s3cret-that-mints-admin-tokens", 1);
    setenv("TOPOBUS_JWT_SECRET_FILE", "/run/secrets/jwt", 1);
    setenv("TOPOBUS_DB", "postgres://topobus:pg-password@db/topobus", 1);
    setenv("TOPOBUS_BUS", "nats://nats:4222", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "not-for-hooks", 1);
    setenv("LANG", "C.UTF-8", 1);
    setenv("TZ", "UTC", 1);
    char body[600];
    snprintf(body, sizeof body, "env > '%s/env.txt'", dir);
    const char *path = script("env.sh", body, 0755);
    const char *hook_env[] = {"TOPOBUS_HOOK_KIND=mutation", "TOPOBUS_HOOK_TOPOLOGY_ID=t_1",
                              "TOPOBUS_HOOK_MUTATION_ID=m_2", "TOPOBUS_HOOK_CLAIM_TOKEN=7", NULL};
    char reason[TB_MUTATOR_REASON_BUF_SIZE];
    assert_int_equal(tb_mutator_hook_run(path, hook_env, "{}", 2, 5000, reason), TB_OK);
    unsetenv("TOPOBUS_JWT_SECRET");
    unsetenv("TOPOBUS_JWT_SECRET_FILE");
    unsetenv("TOPOBUS_DB");
    unsetenv("TOPOBUS_BUS");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    char env_path[512];
    snprintf(env_path, sizeof env_path, "%s/env.txt", dir);
    char *env = slurp(env_path);
    assert_non_null(env);
    assert_null(strstr(env, "s3cret"));
    assert_null(strstr(env, "pg-password"));
    assert_null(strstr(env, "not-for-hooks"));
    assert_non_null(strstr(env, "TOPOBUS_HOOK_KIND=mutation\n"));
    assert_non_null(strstr(env, "TOPOBUS_HOOK_TOPOLOGY_ID=t_1\n"));
    assert_non_null(strstr(env, "TOPOBUS_HOOK_MUTATION_ID=m_2\n"));
    assert_non_null(strstr(env, "TOPOBUS_HOOK_CLAIM_TOKEN=7\n"));
    assert_non_null(strstr(env, "LANG=C.UTF-8\n"));
    assert_non_null(strstr(env, "TZ=UTC\n"));
    assert_non_null(strstr(env, "PATH="));
    /* Nothing else of ours; the shell adds only its own bookkeeping. */
    static const char *const allowed[] = {"PATH=", "HOME=", "LANG=", "TZ=", "TOPOBUS_HOOK_",
                                          "PWD=", "OLDPWD=", "SHLVL=", "_="};
    for (char *save = NULL, *line = strtok_r(env, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        bool ok = false;
        for (size_t i = 0; i < TB_ARRAY_LEN(allowed); i++)
            ok = ok || strncmp(line, allowed[i], strlen(allowed[i])) == 0;
        if (!ok)
            fail_msg("the hook saw %s", line);
    }
    free(env);
}

static void test_hook_leaves_no_process_behind(void **state)
{
    (void)state;
    char body[600];
    /* A daemon started the lazy way, then success; then the same with a failure. */
    snprintf(body, sizeof body, "sleep 1000 &\necho $! > '%s/ok-child.pid'\nexit 0", dir);
    const char *path = script("bg-ok.sh", body, 0755);
    char reason[TB_MUTATOR_REASON_BUF_SIZE];
    int64_t t0 = tb_clock_mono_ms();
    assert_int_equal(tb_mutator_hook_run(path, NULL, "{}", 2, 5000, reason), TB_OK);
    /* The verdict did not wait for the child (it holds stderr open). */
    assert_true(tb_clock_mono_ms() - t0 < 3000);
    assert_true(gone(read_pid("ok-child.pid")));
    snprintf(body, sizeof body,
             "sleep 1000 &\necho $! > '%s/fail-child.pid'\necho 'refused' >&2\nexit 3", dir);
    path = script("bg-fail.sh", body, 0755);
    assert_int_equal(tb_mutator_hook_run(path, NULL, "{}", 2, 5000, reason), TB_EIO);
    assert_string_equal(reason, "refused");
    assert_true(gone(read_pid("fail-child.pid")));
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
        cmocka_unit_test(test_hook_environment_is_minimal),
        cmocka_unit_test(test_hook_leaves_no_process_behind),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
