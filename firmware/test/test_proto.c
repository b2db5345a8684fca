/* Host unit tests of the protocol code (the same proto.c the board runs), against protocol/golden.txt,
 * which the node's Python tests read too: both sides agree byte for byte.
 *   test_proto GOLDEN          check
 *   test_proto --print         print the board lines this code makes (to review a golden change) */
#include "../protocol/proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures, checks;

#define CHECK(cond, ...)                                                                                   \
    do {                                                                                                   \
        checks++;                                                                                          \
        if (!(cond)) {                                                                                     \
            failures++;                                                                                    \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                    \
            printf(__VA_ARGS__);                                                                           \
            printf("\n");                                                                                  \
        }                                                                                                  \
    } while (0)

static char line[256];

/* The board line named `name`, made from fixed inputs; NULL for an unknown name. */
static const char *board_line(const char *name) {
    proto_out o;
    proto_state st = {1000, 0};
    proto_begin(&o, line, sizeof line - 1);
    if (!strcmp(name, "boot.power"))
        proto_boot(&o, "node-7", 0, "1.0.0", "power", &st);
    else if (!strcmp(name, "boot.watchdog")) {
        st = (proto_state){250, 1};
        proto_boot(&o, "node-7", 0, "1.0.0", "watchdog", &st);
    } else if (!strcmp(name, "reading.basic")) {
        int16_t mv[PROTO_ADC_CHANNELS] = {2500, 1200};
        proto_reading(&o, "node-7", 1, mv, 1, &st);
    } else if (!strcmp(name, "reading.failed")) {
        int16_t mv[PROTO_ADC_CHANNELS] = {PROTO_NULL_READING, 0};
        st.out = 1;
        proto_reading(&o, "node-7", 2, mv, 0, &st);
    } else if (!strcmp(name, "reading.last_seq")) {
        int16_t mv[PROTO_ADC_CHANNELS] = {4995, 5};
        proto_reading(&o, "node-7", 4294967295u, mv, 0, &st);
    } else if (!strcmp(name, "heartbeat"))
        proto_heartbeat(&o, "node-7", 7, 3600, 2, 1, &st);
    else if (!strcmp(name, "ack.period")) {
        st.period_ms = 500;
        proto_ack(&o, "node-7", 8, "c1", "1.0.0", 0, &st);
    } else if (!strcmp(name, "ack.config"))
        proto_ack(&o, "node-7", 9, "0123456789abcdef01234567", "1.0.0", 1, &st);
    else if (!strcmp(name, "error.checksum"))
        proto_error(&o, "node-7", 10, NULL, PROTO_E_BAD_CHECKSUM);
    else if (!strcmp(name, "error.unknown_op"))
        proto_error(&o, "node-7", 11, "c5", PROTO_E_UNKNOWN_OP);
    else
        return NULL;
    uint16_t n = proto_end(&o);
    if (!n)
        return "(did not fit)";
    line[n - 1] = 0; /* the golden file holds lines without their newline */
    return line;
}

static const char *const BOARD_NAMES[] = {"boot.power",     "boot.watchdog", "reading.basic",    "reading.failed",
                                          "reading.last_seq", "heartbeat",   "ack.period",       "ack.config",
                                          "error.checksum", "error.unknown_op"};

/* The outcome of parsing a command line, in the golden file's notation. */
static void outcome(const char *cmdline, char *out, size_t cap) {
    static const char *const ops[] = {"period", "out", "identify", "config", "devid", "reset"};
    proto_cmd cmd;
    const char *err = proto_parse_cmd(cmdline, &cmd);
    if (err) {
        snprintf(out, cap, "err|%s|%s", err, cmd.id[0] ? cmd.id : "-");
        return;
    }
    switch (cmd.op) {
    case CMD_PERIOD:
        snprintf(out, cap, "ok|%s|%s|%lu", ops[cmd.op], cmd.id, (unsigned long)cmd.ms);
        break;
    case CMD_OUT:
        snprintf(out, cap, "ok|%s|%s|%s", ops[cmd.op], cmd.id, cmd.on ? "true" : "false");
        break;
    case CMD_DEVID:
        snprintf(out, cap, "ok|%s|%s|%s", ops[cmd.op], cmd.id, cmd.dev);
        break;
    default:
        snprintf(out, cap, "ok|%s|%s", ops[cmd.op], cmd.id);
    }
}

static void test_golden(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        exit(2);
    }
    char buf[1024];
    int board = 0, cmds = 0;
    while (fgets(buf, sizeof buf, f)) {
        buf[strcspn(buf, "\n")] = 0;
        if (!buf[0] || buf[0] == '#')
            continue;
        char *kind = strtok(buf, "\t"), *name = strtok(NULL, "\t"), *text = strtok(NULL, "");
        CHECK(kind && name && text, "golden line without three tab-separated columns");
        if (!kind || !name || !text)
            continue;
        if (!strcmp(kind, "B")) { /* a board line: this code makes exactly these bytes */
            const char *got = board_line(name);
            CHECK(got != NULL, "unknown board line %s", name);
            if (got)
                CHECK(!strcmp(got, text), "%s:\n  made   %s\n  golden %s", name, got, text);
            board++;
        } else if (!strcmp(kind, "C")) { /* a command line and what the board makes of it */
            char got[128];
            char cmdline[PROTO_MAX_CMD + 1];
            if (strlen(text) > PROTO_MAX_CMD) { /* over-long: the receiver refuses it before parsing */
                proto_rx rx;
                proto_rx_init(&rx);
                uint8_t r = PROTO_RX_NONE;
                for (const char *p = text; *p; p++)
                    CHECK(proto_rx_byte(&rx, *p) == PROTO_RX_NONE, "a line ended early");
                r = proto_rx_byte(&rx, '\n');
                snprintf(got, sizeof got, "err|%s|-", r == PROTO_RX_TOO_LONG ? PROTO_E_TOO_LONG : "?");
            } else {
                strcpy(cmdline, text);
                outcome(cmdline, got, sizeof got);
            }
            CHECK(!strcmp(got, name), "command %s:\n  outcome %s\n  golden  %s", text, got, name);
            cmds++;
        } else if (strcmp(kind, "X")) {
            CHECK(0, "unknown golden kind %s", kind);
        }
    }
    fclose(f);
    CHECK(board == (int)(sizeof BOARD_NAMES / sizeof BOARD_NAMES[0]), "golden has %d board lines", board);
    CHECK(cmds >= 10, "golden has only %d command lines", cmds);
}

static void test_crc(void) {
    CHECK(proto_crc16(0xFFFF, "123456789", 9) == 0x29B1, "CRC-16/CCITT-FALSE check value");
    CHECK(proto_crc16(0xFFFF, "", 0) == 0xFFFF, "empty");
}

static void test_receiver(void) {
    proto_rx rx;
    proto_rx_init(&rx);
    const char *in = "ab\r\n\ncd\n";
    int lines = 0;
    for (const char *p = in; *p; p++)
        if (proto_rx_byte(&rx, *p) == PROTO_RX_LINE) {
            lines++;
            CHECK(!strcmp(rx.buf, lines == 1 ? "ab" : "cd"), "line %d is %s", lines, rx.buf);
        }
    CHECK(lines == 2, "CRLF and blank lines: %d lines", lines);
    for (int i = 0; i < 1000; i++) /* far past the limit: swallowed, reported once, then back to normal */
        CHECK(proto_rx_byte(&rx, 'x') == PROTO_RX_NONE, "byte %d of an over-long line", i);
    CHECK(proto_rx_byte(&rx, '\n') == PROTO_RX_TOO_LONG, "over-long line reported at its end");
    for (const char *p = "ok"; *p; p++)
        proto_rx_byte(&rx, *p);
    CHECK(proto_rx_byte(&rx, '\n') == PROTO_RX_LINE && !strcmp(rx.buf, "ok"), "next line after over-long");
    proto_rx_init(&rx); /* exactly the limit fits */
    for (int i = 0; i < PROTO_MAX_CMD; i++)
        proto_rx_byte(&rx, 'y');
    CHECK(proto_rx_byte(&rx, '\n') == PROTO_RX_LINE && strlen(rx.buf) == PROTO_MAX_CMD, "a line at the limit");
}

static void test_output_bounds(void) {
    char small[40];
    proto_out o;
    proto_state st = {1000, 0};
    int16_t mv[PROTO_ADC_CHANNELS] = {1, 2};
    proto_begin(&o, small, sizeof small);
    proto_reading(&o, "node-7", 1, mv, 0, &st);
    CHECK(proto_end(&o) == 0, "a line that does not fit is refused whole");
    CHECK(o.len <= sizeof small, "and nothing written past the buffer");
}

/* Every byte value at every position of a valid command: the parser never reads past the line, never
 * accepts a corrupted line (the checksum), and always names a reason. */
static void test_corruption(void) {
    const char *good = "{\"id\":\"c1\",\"op\":\"period\",\"ms\":500}";
    char base[PROTO_MAX_CMD + 1], mut[PROTO_MAX_CMD + 1];
    proto_out o;
    proto_begin(&o, base, sizeof base);
    o.len = (uint16_t)strlen(good);
    memcpy(base, good, o.len);
    uint16_t n = proto_end(&o);
    base[n - 1] = 0;
    proto_cmd cmd;
    CHECK(proto_parse_cmd(base, &cmd) == NULL && cmd.ms == 500, "the base line is a command");
    int accepted = 0;
    for (size_t i = 0; i + 1 < n; i++)
        for (int b = 1; b < 256; b++) {
            if ((char)b == base[i])
                continue;
            strcpy(mut, base);
            mut[i] = (char)b;
            const char *err = proto_parse_cmd(mut, &cmd);
            if (!err)
                accepted++;
            else
                CHECK(strlen(err) > 0, "a reason");
        }
    CHECK(accepted == 0, "%d single-byte corruptions accepted", accepted);
}

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "--print")) {
        for (size_t i = 0; i < sizeof BOARD_NAMES / sizeof BOARD_NAMES[0]; i++)
            printf("B\t%s\t%s\n", BOARD_NAMES[i], board_line(BOARD_NAMES[i]));
        return 0;
    }
    if (argc != 2) {
        fprintf(stderr, "usage: %s GOLDEN | --print\n", argv[0]);
        return 2;
    }
    test_crc();
    test_receiver();
    test_output_bounds();
    test_corruption();
    test_golden(argv[1]);
    printf("%d checks, %d failures\n", checks, failures);
    return failures != 0;
}
