#ifndef LAPSE_MEDIA_H
#define LAPSE_MEDIA_H

#include <stddef.h>
#include <stdint.h>

/// A decoded PNG: rows packed without padding; 16-bit samples in native (little-endian) byte order.
typedef struct {
    uint32_t width;
    uint32_t height;
    int channels;   /* 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA */
    int bit_depth;  /* 8 or 16 */
    unsigned char *data;
} lapse_png_image;

/// Reads any PNG (1/2/4/8/16-bit, gray, gray+alpha, RGB, RGBA, palette, tRNS, interlaced) without gamma changes.
/// Images wider or taller than max_dimension, or with more than max_pixels pixels, are refused before any pixel
/// memory is allocated. Returns 0 on success; otherwise 1 and a message in err.
int lapse_png_read(const char *path, lapse_png_image *out, uint32_t max_dimension, uint64_t max_pixels, char *err,
                   size_t err_len);

/// Writes a PNG to path (channels 1-4, bit_depth 8 or 16, 16-bit samples in native byte order).
/// Returns 0 on success; otherwise 1 and a message in err (the file may be partly written; the caller removes it).
int lapse_png_write(const char *path, uint32_t width, uint32_t height, int channels, int bit_depth,
                    const void *data, char *err, size_t err_len);

/// Frees the pixels of an image filled by lapse_png_read.
void lapse_png_free(lapse_png_image *image);


/// Routes libav's log into a per-thread "last error line" (echoing everything to stderr when echo is non-zero),
/// so errors can quote what libav said instead of printing it.
void lapse_av_log_install(int echo);

/// The last error line libav logged on this thread ("" if none); valid until the next libav call on the thread.
const char *lapse_av_last_error(void);

/// Forgets this thread's last error line.
void lapse_av_clear_error(void);

#endif
