/*
 * Replays every file of the corpus directories given as arguments through a
 * fuzz target's LLVMFuzzerTestOneInput. Ordinary builds link this instead of
 * libFuzzer, so the committed corpora run as plain tests on every build.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tb/buf.h"
#include "vectors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    size_t len = 0;
    char *text = tb_test_read_file(path, &len);
    if (!text) {
        fprintf(stderr, "cannot open %s\n", path);
        return 1;
    }
    /* Copy into an exact-size allocation so ASan sees reads past the input's end. */
    uint8_t *exact = malloc(len ? len : 1);
    if (len)
        memcpy(exact, text, len);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    free(text);
    return 0;
}

int main(int argc, char **argv)
{
    int files = 0, failures = 0;
    for (int i = 1; i < argc; i++) {
        DIR *dir = opendir(argv[i]);
        if (!dir) {
            fprintf(stderr, "cannot open corpus %s\n", argv[i]);
            return 1;
        }
        struct dirent *de;
        while ((de = readdir(dir)) != NULL) {
            if (de->d_name[0] == '.')
                continue;
            tb_buf_t path;
            tb_buf_init(&path);
            tb_buf_appendf(&path, "%s/%s", argv[i], de->d_name);
            failures += replay_file(path.data);
            tb_buf_cleanup(&path);
            files++;
        }
        closedir(dir);
    }
    printf("replayed %d corpus files\n", files);
    if (files == 0) {
        fprintf(stderr, "empty corpus: nothing was tested\n");
        return 1;
    }
    return failures ? 1 : 0;
}
