/* The board's side of the line protocol: formatting, checksums, command parsing (see proto.h). */
#include "proto.h"

#include <string.h>

uint16_t proto_crc16(uint16_t crc, const char *p, uint16_t n) {
    while (n--) {
        crc ^= (uint16_t)((uint8_t)*p++) << 8;
        for (uint8_t i = 0; i < 8; i++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

static const char HEX[] = "0123456789ABCDEF";

void proto_begin(proto_out *o, char *buf, uint16_t cap) {
    o->buf = buf;
    o->cap = cap;
    o->len = 0;
    o->overflow = 0;
}

static void put(proto_out *o, const char *s) {
    uint16_t n = (uint16_t)strlen(s);
    if (o->overflow || o->cap - o->len < n) {
        o->overflow = 1;
        return;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

static void put_u32(proto_out *o, uint32_t v) {
    char tmp[11];
    uint8_t i = sizeof tmp - 1;
    tmp[i] = 0;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(o, tmp + i);
}

static void put_bool(proto_out *o, uint8_t b) { put(o, b ? "true" : "false"); }

static void put_str(proto_out *o, const char *s) { /* ids are checked to need no escaping */
    put(o, "\"");
    put(o, s);
    put(o, "\"");
}

uint16_t proto_end(proto_out *o) {
    if (o->overflow || o->cap - o->len < 6)
        return 0;
    uint16_t crc = proto_crc16(0xFFFF, o->buf, o->len);
    char *t = o->buf + o->len;
    t[0] = '*';
    t[1] = HEX[crc >> 12];
    t[2] = HEX[(crc >> 8) & 15];
    t[3] = HEX[(crc >> 4) & 15];
    t[4] = HEX[crc & 15];
    t[5] = '\n';
    o->len += 6;
    return o->len;
}

static void head(proto_out *o, const char *dev, uint32_t seq) {
    put(o, "{\"dev\":");
    put_str(o, dev);
    put(o, ",\"seq\":");
    put_u32(o, seq);
}

static void state(proto_out *o, const proto_state *st) {
    put(o, ",\"r\":{\"period_ms\":");
    put_u32(o, st->period_ms);
    put(o, ",\"out\":");
    put_bool(o, st->out);
    put(o, "}}");
}

void proto_boot(proto_out *o, const char *dev, uint32_t seq, const char *fw, const char *reset,
                const proto_state *st) {
    head(o, dev, seq);
    put(o, ",\"boot\":{\"fw\":");
    put_str(o, fw);
    put(o, ",\"reset\":");
    put_str(o, reset);
    put(o, "}");
    state(o, st);
}

void proto_reading(proto_out *o, const char *dev, uint32_t seq, const int16_t *mv, uint8_t din,
                   const proto_state *st) {
    head(o, dev, seq);
    put(o, ",\"r\":{");
    for (uint8_t i = 0; i < PROTO_ADC_CHANNELS; i++) {
        char key[7] = "\"a0\":";
        key[2] = (char)('0' + i);
        if (i)
            put(o, ",");
        put(o, key);
        if (mv[i] == PROTO_NULL_READING)
            put(o, "null");
        else
            put_u32(o, (uint32_t)mv[i]);
    }
    put(o, ",\"d2\":");
    put_bool(o, din);
    put(o, ",\"out\":");
    put_bool(o, st->out);
    put(o, "}}");
}

void proto_heartbeat(proto_out *o, const char *dev, uint32_t seq, uint32_t up_s, uint32_t skipped,
                     uint32_t errors, const proto_state *st) {
    head(o, dev, seq);
    put(o, ",\"hb\":{\"up_s\":");
    put_u32(o, up_s);
    put(o, ",\"skipped\":");
    put_u32(o, skipped);
    put(o, ",\"errors\":");
    put_u32(o, errors);
    put(o, "}");
    state(o, st);
}

void proto_ack(proto_out *o, const char *dev, uint32_t seq, const char *id, const char *fw,
               uint8_t with_cfg, const proto_state *st) {
    head(o, dev, seq);
    put(o, ",\"ack\":");
    put_str(o, id);
    if (with_cfg) {
        put(o, ",\"cfg\":{\"fw\":");
        put_str(o, fw);
        put(o, ",\"adc\":");
        put_u32(o, PROTO_ADC_CHANNELS);
        put(o, ",\"min_ms\":");
        put_u32(o, PROTO_MIN_PERIOD_MS);
        put(o, ",\"max_ms\":");
        put_u32(o, PROTO_MAX_PERIOD_MS);
        put(o, "}");
    }
    state(o, st);
}

void proto_error(proto_out *o, const char *dev, uint32_t seq, const char *id, const char *why) {
    head(o, dev, seq);
    put(o, ",\"err\":");
    put_str(o, why);
    put(o, ",\"id\":");
    if (id && *id)
        put_str(o, id);
    else
        put(o, "null");
    put(o, "}");
}

void proto_rx_init(proto_rx *rx) {
    rx->len = 0;
    rx->overflow = 0;
}

uint8_t proto_rx_byte(proto_rx *rx, char c) {
    if (c == '\n' || c == '\r') {
        uint8_t was = rx->overflow, len = rx->len;
        rx->len = 0;
        rx->overflow = 0;
        if (was)
            return PROTO_RX_TOO_LONG;
        if (!len)
            return PROTO_RX_NONE; /* blank line, or the LF of a CRLF */
        rx->buf[len] = 0;
        return PROTO_RX_LINE;
    }
    if (rx->overflow)
        return PROTO_RX_NONE;
    if (rx->len >= PROTO_MAX_CMD) {
        rx->overflow = 1;
        return PROTO_RX_NONE;
    }
    rx->buf[rx->len++] = c;
    return PROTO_RX_NONE;
}

/* ---- command parsing: one flat JSON object of strings, unsigned integers and booleans ---- */

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F') /* uppercase only: one spelling per checksum */
        return c - 'A' + 10;
    return -1;
}

static uint8_t id_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == ':';
}

/* 1 if s is 1..max characters of [A-Za-z0-9._:-] */
static uint8_t valid_name(const char *s, uint8_t max) {
    uint8_t n = 0;
    for (; *s; s++, n++)
        if (!id_char(*s))
            return 0;
    return n >= 1 && n <= max;
}

static const char *ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

enum { V_NONE, V_STR, V_NUM, V_BOOL, V_BAD_NUM, V_LONG_STR };

typedef struct {
    uint8_t kind;
    char s[PROTO_MAX_ID + 1];
    uint32_t n;
} jvalue;

/* Reads a string at p (after its opening quote) into out (max bytes, else *long_ set); NULL if malformed. */
static const char *jstring(const char *p, const char *end, char *out, uint8_t max, uint8_t *long_) {
    uint8_t n = 0;
    *long_ = 0;
    for (; p < end && *p != '"'; p++) {
        if (*p == '\\' || (uint8_t)*p < 0x20)
            return 0; /* no escapes: ids and names never need them */
        if (n < max)
            out[n++] = *p;
        else
            *long_ = 1;
    }
    out[n] = 0;
    return p < end ? p + 1 : 0;
}

static const char *jvalue_read(const char *p, const char *end, jvalue *v) {
    uint8_t long_;
    if (p >= end)
        return 0;
    if (*p == '"') {
        p = jstring(p + 1, end, v->s, PROTO_MAX_ID, &long_);
        v->kind = long_ ? V_LONG_STR : V_STR;
        return p;
    }
    if (*p >= '0' && *p <= '9') {
        uint32_t n = 0;
        uint8_t bad = 0;
        for (; p < end && *p >= '0' && *p <= '9'; p++) {
            uint8_t d = (uint8_t)(*p - '0');
            if (n > (0xFFFFFFFFu - d) / 10)
                bad = 1;
            else
                n = n * 10 + d;
        }
        if (p < end && (*p == '.' || *p == 'e' || *p == 'E'))
            bad = 1; /* a fraction: no such setting */
        while (p < end && ((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' || *p == 'E' || *p == '+' ||
                           *p == '-'))
            p++;
        v->kind = bad ? V_BAD_NUM : V_NUM;
        v->n = n;
        return p;
    }
    if (*p == '-') { /* a negative number: valid JSON, never a valid setting */
        p++;
        while (p < end && ((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' || *p == 'E'))
            p++;
        v->kind = V_BAD_NUM;
        return p;
    }
    static const char *const words[3] = {"true", "false", "null"};
    for (uint8_t i = 0; i < 3; i++) {
        uint8_t n = (uint8_t)strlen(words[i]);
        if (end - p >= n && !memcmp(p, words[i], n)) {
            v->kind = i == 2 ? V_NONE : V_BOOL;
            v->n = i == 0;
            return p + n;
        }
    }
    return 0; /* objects, arrays, garbage */
}

const char *proto_parse_cmd(const char *line, proto_cmd *cmd) {
    memset(cmd, 0, sizeof *cmd);
    const char *star = strrchr(line, '*');
    if (!star || strlen(star + 1) != 4)
        return PROTO_E_NO_CHECKSUM;
    uint16_t want = 0;
    for (uint8_t i = 1; i <= 4; i++) {
        int h = hexval(star[i]);
        if (h < 0)
            return PROTO_E_NO_CHECKSUM;
        want = (uint16_t)(want << 4 | (uint16_t)h);
    }
    if (proto_crc16(0xFFFF, line, (uint16_t)(star - line)) != want)
        return PROTO_E_BAD_CHECKSUM;

    const char *p = ws(line, star), *end = star;
    char op[12] = "";
    uint8_t have_op = 0, have_ms = 0, have_on = 0, have_dev = 0, bad_value = 0, bad_id = 0;
    if (p >= end || *p++ != '{')
        return PROTO_E_BAD_JSON;
    p = ws(p, end);
    if (p < end && *p == '}') {
        p++;
    } else {
        for (;;) {
            char key[9];
            uint8_t long_;
            jvalue v;
            if (p >= end || *p != '"' || !(p = jstring(p + 1, end, key, 8, &long_)))
                return PROTO_E_BAD_JSON;
            p = ws(p, end);
            if (p >= end || *p++ != ':')
                return PROTO_E_BAD_JSON;
            p = ws(p, end);
            if (!(p = jvalue_read(p, end, &v)))
                return PROTO_E_BAD_JSON;
            if (long_)
                ; /* an unknown key (from a newer node): ignored */
            else if (!strcmp(key, "id")) {
                if (v.kind == V_STR && valid_name(v.s, PROTO_MAX_ID))
                    strcpy(cmd->id, v.s);
                else
                    bad_id = 1;
            } else if (!strcmp(key, "op")) {
                have_op = 1;
                if (v.kind == V_STR && strlen(v.s) < sizeof op)
                    strcpy(op, v.s);
            } else if (!strcmp(key, "ms")) {
                have_ms = 1;
                bad_value |= v.kind != V_NUM;
                cmd->ms = v.n;
            } else if (!strcmp(key, "on")) {
                have_on = 1;
                bad_value |= v.kind != V_BOOL && !(v.kind == V_NUM && v.n <= 1);
                cmd->on = (uint8_t)v.n;
            } else if (!strcmp(key, "dev")) {
                have_dev = 1;
                if (v.kind == V_STR && valid_name(v.s, PROTO_MAX_DEV))
                    strcpy(cmd->dev, v.s);
                else
                    bad_value = 1;
            }
            p = ws(p, end);
            if (p < end && *p == ',') {
                p = ws(p + 1, end);
                continue;
            }
            if (p < end && *p == '}') {
                p++;
                break;
            }
            return PROTO_E_BAD_JSON;
        }
    }
    if (ws(p, end) != end)
        return PROTO_E_BAD_JSON;
    if (bad_id)
        return PROTO_E_BAD_ID;
    if (!cmd->id[0])
        return PROTO_E_NO_ID;
    if (!have_op)
        return PROTO_E_UNKNOWN_OP;
    static const char *const ops[] = {"period", "out", "identify", "config", "devid", "reset"};
    uint8_t i = 0;
    while (i < sizeof ops / sizeof ops[0] && strcmp(op, ops[i]))
        i++;
    if (i == sizeof ops / sizeof ops[0])
        return PROTO_E_UNKNOWN_OP;
    cmd->op = (proto_op)i;
    if (bad_value)
        return PROTO_E_BAD_VALUE;
    switch (cmd->op) {
    case CMD_PERIOD:
        if (!have_ms)
            return PROTO_E_MISSING_VALUE;
        if (cmd->ms < PROTO_MIN_PERIOD_MS || cmd->ms > PROTO_MAX_PERIOD_MS)
            return PROTO_E_BAD_VALUE;
        break;
    case CMD_OUT:
        if (!have_on)
            return PROTO_E_MISSING_VALUE;
        break;
    case CMD_DEVID:
        if (!have_dev)
            return PROTO_E_MISSING_VALUE;
        break;
    default:
        break;
    }
    return 0;
}
