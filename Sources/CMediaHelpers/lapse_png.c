// libpng's classic API reports errors by longjmp, which Swift cannot catch; this file keeps every setjmp in C
// and turns errors into return codes plus a message. The simplified png_image API is not used because it treats
// 16-bit data as linear light and would gamma-convert it, breaking exact 16-bit round trips.
#include "lapse_media.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    jmp_buf jump;
    char *err;
    size_t err_len;
    char warning[256];
    /// Why the last read or write of the file failed: errno, or -1 for a file that ended early; 0 when I/O was fine.
    int io_error;
} lapse_png_error_state;

static void lapse_png_on_error(png_structp png, png_const_charp message) {
    lapse_png_error_state *state = (lapse_png_error_state *)png_get_error_ptr(png);
    // libpng's own words for I/O failures are "Read Error"/"Write Error"; the system's reason is what a user can act
    // on ("No space left on device").
    if (state->io_error > 0)
        snprintf(state->err, state->err_len, "%s", strerror(state->io_error));
    else if (state->io_error < 0)
        snprintf(state->err, state->err_len, "the file ends early (truncated)");
    // libpng often explains an error in the warning just before it (e.g. "Image width exceeds user limit").
    else if (state->warning[0])
        snprintf(state->err, state->err_len, "%s (%s)", message, state->warning);
    else
        snprintf(state->err, state->err_len, "%s", message);
    longjmp(state->jump, 1);
}

static void lapse_png_on_warning(png_structp png, png_const_charp message) {
    // Warnings (unknown chunks, bad iCCP) do not stop decoding; the last one is kept to explain a later error.
    lapse_png_error_state *state = (lapse_png_error_state *)png_get_error_ptr(png);
    snprintf(state->warning, sizeof state->warning, "%s", message);
}

// Replacements for libpng's stdio callbacks that record why I/O failed before handing control to the error handler.
static void lapse_png_read_data(png_structp png, png_bytep data, size_t length) {
    FILE *file = (FILE *)png_get_io_ptr(png);
    errno = 0;
    if (fread(data, 1, length, file) != length) {
        lapse_png_error_state *state = (lapse_png_error_state *)png_get_error_ptr(png);
        state->io_error = ferror(file) ? (errno ? errno : EIO) : -1;
        png_error(png, "Read Error");
    }
}

static void lapse_png_write_data(png_structp png, png_bytep data, size_t length) {
    FILE *file = (FILE *)png_get_io_ptr(png);
    errno = 0;
    if (fwrite(data, 1, length, file) != length) {
        lapse_png_error_state *state = (lapse_png_error_state *)png_get_error_ptr(png);
        state->io_error = errno ? errno : EIO;
        png_error(png, "Write Error");
    }
}

static void lapse_png_flush_data(png_structp png) {
    FILE *file = (FILE *)png_get_io_ptr(png);
    errno = 0;
    if (fflush(file) != 0) {
        lapse_png_error_state *state = (lapse_png_error_state *)png_get_error_ptr(png);
        state->io_error = errno ? errno : EIO;
        png_error(png, "Write Error");
    }
}

int lapse_png_read(const char *path, lapse_png_image *out, uint32_t max_dimension, uint64_t max_pixels, char *err,
                   size_t err_len) {
    memset(out, 0, sizeof(*out));
    FILE *file = fopen(path, "rb");
    if (!file) {
        snprintf(err, err_len, "cannot open: %s", strerror(errno));
        return 1;
    }
    unsigned char signature[8];
    size_t got = fread(signature, 1, 8, file);
    if (got != 8 || png_sig_cmp(signature, 0, 8) != 0) {
        fclose(file);
        snprintf(err, err_len, "not a PNG file (bad signature)");
        return 1;
    }
    lapse_png_error_state state;
    state.err = err;
    state.err_len = err_len;
    state.warning[0] = 0;
    state.io_error = 0;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &state, lapse_png_on_error, lapse_png_on_warning);
    if (!png) {
        fclose(file);
        snprintf(err, err_len, "out of memory");
        return 1;
    }
    png_infop info = png_create_info_struct(png);
    // Written after setjmp and read after longjmp, so they must be volatile.
    unsigned char *volatile pixels = NULL;
    png_bytep *volatile rows = NULL;
    if (!info || setjmp(state.jump)) {
        if (!info) snprintf(err, err_len, "out of memory");
        png_destroy_read_struct(&png, info ? &info : NULL, NULL);
        free(pixels);
        free(rows);
        fclose(file);
        return 1;
    }
    png_set_read_fn(png, file, lapse_png_read_data);
    png_set_sig_bytes(png, 8);
    // Refuse absurd headers while parsing IHDR, before libpng reads further or anything large is allocated.
    png_set_user_limits(png, max_dimension, max_dimension);
    png_read_info(png, info);

    png_uint_32 width = png_get_image_width(png, info);
    png_uint_32 height = png_get_image_height(png, info);
    if ((uint64_t)width * (uint64_t)height > max_pixels) {
        snprintf(err, err_len, "image is %ux%u, more than the %llu pixels allowed", width, height,
                 (unsigned long long)max_pixels);
        longjmp(state.jump, 1);
    }
    // Palette -> RGB, gray below 8 bits -> 8 bits, tRNS -> alpha channel; values are never gamma-corrected.
    png_set_expand(png);
    if (png_get_bit_depth(png, info) == 16) png_set_swap(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);

    int channels = png_get_channels(png, info);
    int depth = png_get_bit_depth(png, info);
    if (channels < 1 || channels > 4 || (depth != 8 && depth != 16)) {
        snprintf(err, err_len, "unsupported layout after expansion: %d channels, %d bits", channels, depth);
        longjmp(state.jump, 1);
    }
    size_t row_bytes = png_get_rowbytes(png, info);
    pixels = malloc(row_bytes * (size_t)height + 1);
    rows = malloc(sizeof(png_bytep) * (size_t)height + 1);
    if (!pixels || !rows) {
        snprintf(err, err_len, "out of memory for %ux%u image", width, height);
        longjmp(state.jump, 1);
    }
    for (png_uint_32 y = 0; y < height; y++) rows[y] = pixels + (size_t)y * row_bytes;
    png_read_image(png, rows);
    png_read_end(png, NULL);

    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    fclose(file);
    out->width = width;
    out->height = height;
    out->channels = channels;
    out->bit_depth = depth;
    out->data = pixels;
    return 0;
}

int lapse_png_write(const char *path, uint32_t width, uint32_t height, int channels, int bit_depth,
                    const void *data, char *err, size_t err_len) {
    static const int color_types[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
                                       PNG_COLOR_TYPE_RGB_ALPHA};
    if (channels < 1 || channels > 4 || (bit_depth != 8 && bit_depth != 16)) {
        snprintf(err, err_len, "cannot write %d channels at %d bits", channels, bit_depth);
        return 1;
    }
    FILE *file = fopen(path, "wb");
    if (!file) {
        snprintf(err, err_len, "cannot create: %s", strerror(errno));
        return 1;
    }
    lapse_png_error_state state;
    state.err = err;
    state.err_len = err_len;
    state.warning[0] = 0;
    state.io_error = 0;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &state, lapse_png_on_error, lapse_png_on_warning);
    if (!png) {
        fclose(file);
        snprintf(err, err_len, "out of memory");
        return 1;
    }
    png_infop info = png_create_info_struct(png);
    if (!info || setjmp(state.jump)) {
        if (!info) snprintf(err, err_len, "out of memory");
        png_destroy_write_struct(&png, info ? &info : NULL);
        fclose(file);
        return 1;
    }
    png_set_write_fn(png, file, lapse_png_write_data, lapse_png_flush_data);
    png_set_IHDR(png, info, width, height, bit_depth, color_types[channels], PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    if (bit_depth == 16) png_set_swap(png);
    size_t row_bytes = (size_t)width * (size_t)channels * (size_t)(bit_depth / 8);
    const unsigned char *bytes = (const unsigned char *)data;
    for (uint32_t y = 0; y < height; y++) png_write_row(png, (png_const_bytep)(bytes + (size_t)y * row_bytes));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    if (fflush(file) != 0 || ferror(file)) {
        snprintf(err, err_len, "%s", strerror(errno));
        fclose(file);
        return 1;
    }
    if (fclose(file) != 0) {
        snprintf(err, err_len, "%s", strerror(errno));
        return 1;
    }
    return 0;
}

void lapse_png_free(lapse_png_image *image) {
    free(image->data);
    image->data = NULL;
}
