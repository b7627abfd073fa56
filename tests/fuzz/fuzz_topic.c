/*
 * Topic and pattern validation and matching on arbitrary bytes. Checks the
 * invariants, not only the absence of crashes: a valid topic matches itself
 * and `>`; a valid topic is a valid pattern; matching never claims success
 * for an invalid input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tb/topic.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Split the input at the first NUL into a pattern and a topic. */
    char *copy = malloc(size + 2);
    memcpy(copy, data, size);
    copy[size] = '\0';
    copy[size + 1] = '\0';
    const char *pattern = copy;
    const char *topic = copy + strlen(copy) + 1;
    if (topic > copy + size)
        topic = copy + size + 1;

    bool topic_ok = tb_topic_validate(topic, NULL) == TB_OK;
    bool pattern_ok = tb_topic_validate_pattern(pattern, NULL) == TB_OK;
    bool matched = tb_topic_match(pattern, topic);
    if (matched && (!topic_ok || !pattern_ok))
        abort();
    if (topic_ok) {
        if (tb_topic_validate_pattern(topic, NULL) != TB_OK || !tb_topic_match(topic, topic) ||
            !tb_topic_match(">", topic))
            abort();
        char id[TB_TOPOLOGY_ID_BUF_SIZE];
        if (tb_topic_topology_id(topic, id) == TB_OK && !tb_topology_id_valid(id))
            abort();
        if (strlen(tb_topic_type(topic)) == 0)
            abort();
    }
    char built[TB_TOPIC_BUF_SIZE];
    if (tb_topic_build(built, TB_TOPIC_STATUS, pattern) == TB_OK &&
        tb_topic_validate(built, NULL) != TB_OK)
        abort();
    free(copy);
    return 0;
}
